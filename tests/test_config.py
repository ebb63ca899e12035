"""Configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistack.config import Config, ConfigError, sentinel_master_of


def test_defaults_need_no_environment(tmp_path: Path) -> None:
    config = Config.from_env({"AISTACK_HOME": str(tmp_path)})

    assert config.home == tmp_path
    assert config.database_url is None and config.redis_url is None
    assert config.debug is False
    assert "localhost" in config.allowed_hosts
    assert config.chat_model == "local:extractive"


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEBUG", "maybe"), ("JOB_LEASE_SECONDS", "soon"), ("JOB_LEASE_SECONDS", "-4"),
     ("DOCUMENT_MAX_CHARS", "0"), ("JOB_RETRY_BACKOFF_SECONDS", "x")],
)
def test_bad_values_are_named_in_the_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    config = Config.from_env({"AISTACK_HOME": str(tmp_path)})

    first = config.resolved_secret_key()

    assert len(first) >= 50
    assert config.resolved_secret_key() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_celery_spells_unix_sockets_its_own_way() -> None:
    assert Config.celery_broker_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert Config.celery_broker_url("redis://h:6379/0") == "redis://h:6379/0"


def test_sentinels_need_redis_url_to_name_the_master() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL to name the master"):
        Config.from_env({"REDIS_SENTINELS": "10.0.0.1:26379"})
    for url in ("unix:///tmp/r.sock", "redis://mymaster:6379/0", "redis:///0",
                "redis://mymaster/zero", "redis://mymaster/0?db=2"):
        with pytest.raises(ConfigError, match="REDIS_URL to name the master"):
            Config.from_env({"REDIS_SENTINELS": "10.0.0.1", "REDIS_URL": url})


@pytest.mark.parametrize("value", ["10.0.0.1:port", "10.0.0.1:0", ":26379", "h:70000",
                                   "redis://h:26379", "fd00::1", "[fd00::1"])
def test_bad_sentinels_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS must be host:port"):
        Config.from_env({"REDIS_SENTINELS": value, "REDIS_URL": "redis://mymaster/0"})


def test_sentinels_reach_celery_as_kombu_spells_them() -> None:
    config = Config.from_env({"REDIS_SENTINELS": "s1:26380, s2 ,[fd00::3]:26381",
                              "REDIS_URL": "redis://:secret@mymaster/2"})

    assert config.redis_sentinels == (("s1", 26380), ("s2", 26379), ("fd00::3", 26381))
    assert Config.celery_broker_url(config.redis_url or "", config.redis_sentinels) == (
        "sentinel://:secret@s1:26380/2;sentinel://:secret@s2:26379/2;"
        "sentinel://:secret@[fd00::3]:26381/2")
    # Names are case-sensitive; a ';' in a password must not split kombu's list.
    assert sentinel_master_of("redis://u:p;w@MyMaster/0") == "MyMaster"
    assert Config.celery_broker_url("redis://u:p;w@MyMaster/0", [("s1", 1)]) == (
        "sentinel://u:p%3Bw@s1:1/0")
