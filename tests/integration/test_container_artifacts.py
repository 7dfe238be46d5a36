"""The container artifacts as a reviewer would check them, without Docker.

docker-compose.yml is loaded as YAML (scripts/check-compose.sh runs `docker compose
config` where Compose exists); the Dockerfile and .dockerignore are read as text.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


# --- docker-compose.yml --------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_runs_dynamodb_local_then_init_then_the_api() -> None:
    services = compose()["services"]
    assert set(services) == {"dynamodb", "store-init", "api"}
    dynamodb, init, api = services["dynamodb"], services["store-init"], services["api"]

    assert dynamodb["image"].startswith("amazon/dynamodb-local")
    assert dynamodb["healthcheck"]["test"]
    assert "sandbox-broker init-store" in _command(init)
    assert "sandbox-broker seed" in _command(init)
    assert init["depends_on"]["dynamodb"]["condition"] == "service_healthy"
    assert api["depends_on"]["store-init"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["dynamodb"]["condition"] == "service_healthy"

    for service in (init, api):
        env = service["environment"]
        assert env["BROKER_STORE"] == "dynamodb"
        assert env["BROKER_ENV"] == "dev"
        assert env["DDB_ENDPOINT_URL"] == "http://dynamodb:8000"
    assert any(str(port).endswith("8080:8080") for port in api["ports"])
    assert "sandbox-broker serve" in _command(api) and "0.0.0.0" in _command(api)


# --- Dockerfile and .dockerignore ------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _exec_form(argument: str) -> list[str]:
    if argument.startswith("["):
        parsed = yaml.safe_load(argument)  # a JSON array is valid YAML
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return shlex.split(argument)


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    froms = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert all("slim" in instructions[i][1] for i in froms)
    final = instructions[froms[-1]:]
    assert any(k == "COPY" and a.startswith("--from=") for k, a in final)

    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}

    healthchecks = [a for k, a in final if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]

    entrypoint = [_exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    cmd = [_exec_form(a) for k, a in final if k == "CMD"]
    argv = (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])
    assert argv[:2] == ["sandbox-broker", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"

    installs = " ".join(a for k, a in instructions if k == "RUN")
    assert "[dev]" not in installs and "-e " not in installs, "runtime dependencies only"


def test_dockerignore_keeps_tests_data_and_venv_out() -> None:
    patterns = [line.strip() for line in
                (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if patterns[0] == "*":  # allow-list style: only these come back in
        reincluded = {p[1:].strip("/") for p in patterns if p.startswith("!")}
        assert reincluded <= {"app", "pyproject.toml", "README.md"}, reincluded
    else:
        excluded = {p.strip("/") for p in patterns if not p.startswith("!")}
        assert {"tests", "data", ".venv"} <= excluded
