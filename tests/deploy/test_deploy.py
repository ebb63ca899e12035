"""The deployment files: what docker compose would run, read without a Docker engine."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import crossplane
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values

import aistack.cli.processes
from aistack.cli import main as cli
from aistack.config import Config
from aistack.documents.middleware import _ENVELOPE_BYTES
from aistack.realtime.events import KEEPALIVE_SECONDS
from aistack.runtime.embedded import POSTGRES_MAJOR
from harness import clean_env

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "worker", "scheduler")
SSE_ROUTE = "/api/v1/events"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str | None]:
    return dotenv_values(ROOT / ".env.example")


def built_from_dockerfile(service: Mapping[str, Any]) -> bool:
    return service.get("build") in (".", {"context": "."})


def config_variables() -> set[str]:
    """Return every environment variable Config.from_env reads."""

    class Recorder(Mapping[str, str]):
        def __init__(self) -> None:
            self.read: set[str] = set()

        def __getitem__(self, key: str) -> str:
            self.read.add(key)
            raise KeyError(key)

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return default

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    recorder = Recorder()
    Config.from_env(recorder)
    return recorder.read


def test_the_reference_services_are_all_there(services: dict[str, dict[str, Any]]) -> None:
    assert {"web", "worker", "scheduler", "db", "redis", "nginx"} <= set(services)
    image, _, tag = services["db"]["image"].partition(":")
    assert image == "pgvector/pgvector"
    # One PostgreSQL everywhere: the embedded server's major version.
    assert tag == f"pg{POSTGRES_MAJOR}"
    # Nginx is the one way in.
    assert [name for name, service in services.items() if service.get("ports")] == ["nginx"]


def test_every_command_is_one_the_image_can_run(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = DockerfileParser(str(ROOT / "Dockerfile"))
    entrypoint = [i["value"] for i in dockerfile.structure if i["instruction"] == "ENTRYPOINT"]
    assert entrypoint[-1] == '["aistack"]'
    # `aistack` in the image is this click group: the console script pyproject names.
    assert 'aistack = "aistack.cli:main"' in (ROOT / "pyproject.toml").read_text()
    app_services = {name: s for name, s in services.items() if built_from_dockerfile(s)}
    assert set(APP_SERVICES) <= set(app_services)
    for name, service in app_services.items():
        command, *args = service["command"]
        assert command in cli.commands, f"{name}: no `aistack {command}`"
        if command == "manage":
            assert args[0] in get_commands(), f"{name}: no `aistack manage {args[0]}`"
        else:
            # Parsing the arguments checks every option exists and takes such a value.
            cli.commands[command].make_context(command, list(args))


def test_health_checks_probe_what_each_service_needs(
    services: dict[str, dict[str, Any]],
) -> None:
    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert re.search(r"localhost:8000/(healthz|readyz)", probe("web"))
    assert "pg_isready" in probe("db")
    assert "redis-cli ping" in probe("redis")
    # The worker answers a ping addressed to its own node name (see `aistack worker`).
    assert "inspect ping --destination worker-0@$$HOSTNAME" in probe("worker")
    assert "--hostname=worker-%i@%h" in Path(aistack.cli.processes.__file__).read_text()


def test_services_start_in_order(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        after = services[name]["depends_on"]
        assert after["db"]["condition"] == "service_healthy"
        assert after["redis"]["condition"] == "service_healthy"
        assert after["migrate"]["condition"] == "service_completed_successfully"
    assert services["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            if rule["condition"] == "service_completed_successfully":
                assert services[target]["restart"] == "no", f"{target} runs once"


def test_state_lives_in_named_volumes(compose: dict[str, Any],
                                      services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])

    def mounts(name: str) -> dict[str, str]:
        pairs = (v.split(":")[:2] for v in services[name].get("volumes", []))
        return {target: source for source, target in pairs}

    assert mounts("db")["/var/lib/postgresql"] in declared
    assert mounts("redis")["/data"] in declared
    # No disk is shared by web and workers: originals are in PostgreSQL. Only the
    # migration reads where earlier releases kept them, to copy them in.
    assert "/data/media" not in mounts("web") and "/data/media" not in mounts("worker")
    assert mounts("migrate")["/data/media"] in declared
    # What collectstatic writes is what Nginx serves.
    assert mounts("collectstatic")["/data/static"] == mounts("nginx")["/srv/static"] in declared
    for name in services:
        for source in mounts(name).values():
            assert source.startswith("./") or source in declared, f"{name}: {source}"


def test_shutdown_grace_outlasts_the_drain(services: dict[str, dict[str, Any]]) -> None:
    command = services["web"]["command"]
    drain = int(command[command.index("--graceful-timeout") + 1])
    grace = services["web"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > drain
    assert all(services[name].get("init") is True for name in APP_SERVICES)


def test_env_example_lists_exactly_what_config_reads(
    compose: dict[str, Any], services: dict[str, dict[str, Any]],
    env_example: dict[str, str | None],
) -> None:
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / "docker-compose.yml")
                                  .read_text()))
    read = config_variables()
    assert read <= set(env_example), "missing from .env.example"
    assert set(env_example) - read <= interpolated, "in .env.example, but nothing reads it"
    assert all(services[name]["env_file"] == ".env" for name in APP_SERVICES)
    # The example's values parse, and fit the compose file.
    config = Config.from_env({**{k: v or "" for k, v in env_example.items()},
                              "SECRET_KEY": "x" * 50})
    assert config.https is True
    database = urlsplit(config.database_url or "")
    db_env = services["db"]["environment"]
    assert (database.hostname, database.username, database.path) == (
        "db", db_env["POSTGRES_USER"], "/" + db_env["POSTGRES_DB"])
    assert database.password == env_example["POSTGRES_PASSWORD"]
    assert urlsplit(config.redis_url or "").hostname == "redis"
    assert "localhost" in config.allowed_hosts
    assert str(config.home) == "/data"


def nginx_server() -> list[dict[str, Any]]:
    """Parse deploy/nginx.conf where compose puts it: inside nginx's http block."""
    main = ROOT / "artifacts" / "nginx-main.conf"
    main.parent.mkdir(exist_ok=True)
    main.write_text(f"events {{}}\nhttp {{\n    include {ROOT / 'deploy' / 'nginx.conf'};\n}}\n")
    parsed = crossplane.parse(str(main))
    main.unlink()
    assert parsed["status"] == "ok", parsed["errors"]
    http_block = parsed["config"][0]["parsed"][1]["block"]
    included = parsed["config"][1]["parsed"]
    assert http_block[0]["directive"] == "include"
    [server] = [d["block"] for d in included if d["directive"] == "server"]
    return server


def directive(block: list[dict[str, Any]], name: str) -> list[str]:
    [found] = [d["args"] for d in block if d["directive"] == name]
    return found


def location(server: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """Return the block of the location that serves ``path`` (exact or regex or prefix)."""
    for entry in server:
        if entry["directive"] != "location":
            continue
        args = entry["args"]
        if (args[0] == "=" and args[1] == path) or (
            args[0] in ("~", "~*") and re.search(args[1], path)
        ):
            return entry["block"]
    prefixes = [e for e in server if e["directive"] == "location" and len(e["args"]) == 1
                and path.startswith(e["args"][0])]
    return max(prefixes, key=lambda e: len(e["args"][0]))["block"]


def test_nginx_streams_events_unbuffered() -> None:
    server = nginx_server()
    for path in (SSE_ROUTE, "/api/v1/ask", "/api/v1/chat"):
        block = location(server, path)
        assert directive(block, "proxy_buffering") == ["off"], path
        assert directive(block, "proxy_pass") == ["http://aistack_web"]
    # An idle stream's keepalives come often enough for nginx to keep it open.
    assert int(directive(server, "proxy_read_timeout")[0].removesuffix("s")) > KEEPALIVE_SECONDS
    # Everything else is passed to web with buffering on (nginx's default).
    assert not any(d["directive"] == "proxy_buffering" for d in location(server, "/api/v1/x"))


def test_nginx_takes_uploads_up_to_the_limit_and_serves_no_uploaded_file(
    services: dict[str, dict[str, Any]],
) -> None:
    server = nginx_server()
    size = directive(server, "client_max_body_size")[0]
    assert size.endswith("m")
    assert int(size[:-1]) * 1024 * 1024 >= settings.UPLOAD_MAX_BYTES + _ENVELOPE_BYTES
    assert directive(location(server, "/static/app.css"), "alias") == ["/srv/static/"]
    # Uploads go only through the API (to members): /media/ falls through to Django.
    assert "alias" not in {d["directive"] for d in location(server, "/media/uploads/a.pdf")}
    web_port = services["web"]["command"][services["web"]["command"].index("--port") + 1]
    upstreams = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server web:{web_port};" in upstreams


def test_the_image_builds_in_two_stages_and_runs_unprivileged() -> None:
    dockerfile = DockerfileParser(str(ROOT / "Dockerfile"))
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction["instruction"], instruction["value"]))
    assert len(stages) == 2
    final = stages[-1]
    assert final[0][1].startswith("python:") and final[0][1].endswith("-slim")
    users = [value for instruction, value in final if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    final_runs = " ".join(value for instruction, value in final if instruction == "RUN")
    for tool in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert tool not in final_runs
    copies = [value for instruction, value in final if instruction == "COPY"]
    assert copies == ["--from=builder /opt/aistack /opt/aistack"]


def aistack_manage(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aistack", "manage", *args], env=dict(env),
                          capture_output=True, text=True, timeout=120, check=False)


def production_env(env_example: dict[str, str | None], home: Path) -> dict[str, str]:
    """The example's settings, with a real secret, against this test session's services."""
    return clean_env(**{
        **{key: value or "" for key, value in env_example.items()},
        "SECRET_KEY": secrets.token_urlsafe(50),
        "AISTACK_HOME": str(home),
        "DATABASE_URL": "postgresql://aistack@db.invalid/aistack",
        "REDIS_URL": settings.REDIS_URL,
    })


def test_production_settings_pass_the_deploy_check(
    env_example: dict[str, str | None], tmp_path: Path
) -> None:
    env = production_env(env_example, tmp_path)

    result = aistack_manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # The plain-http defaults `aistack serve` runs with are what the check is about.
    plain = aistack_manage("check", "--deploy", "--fail-level", "WARNING",
                           env={**env, "HTTPS": "false"})
    assert plain.returncode != 0
    for warning in ("security.W008", "security.W012", "security.W016", "security.W004"):
        assert warning in plain.stderr


def test_collectstatic_fills_the_volume_nginx_serves(
    env_example: dict[str, str | None], tmp_path: Path
) -> None:
    result = aistack_manage("collectstatic", "--noinput",
                            env=production_env(env_example, tmp_path))

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "static" / "admin" / "css" / "base.css").is_file()
    assert any((tmp_path / "static" / "web").iterdir())

