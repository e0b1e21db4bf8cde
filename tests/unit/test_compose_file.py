"""infra/docker-compose.yml passes `docker compose config` (or the same loader, compose-go)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "docker-compose.yml"
REQUIRED = ("TOKENLOG_GATEWAY_SECRET", "TOKENLOG_SERVICE_TOKEN")
"""Variables the compose file refuses to start without (no default secret)."""
SECRETS = {name: secrets.token_urlsafe(48) for name in REQUIRED}


def compose_config(path: Path, env: Mapping[str, str] = SECRETS) -> subprocess.CompletedProcess[str]:
    """`docker compose config` where the compose plugin exists, else compose-go's loader,
    which is what that command runs (schema validation, interpolation, normalisation); with
    ``env`` in place of the required variables of the caller's environment."""
    docker = shutil.which("docker")
    has_plugin = docker is not None and (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    )
    if docker and has_plugin:
        argv = [docker, "compose", "-f", str(path), "config"]
    else:
        go = shutil.which("go")
        assert go, "neither `docker compose` nor Go is available to validate the compose file"
        argv = [go, "run", ".", str(path)]
    child = {k: v for k, v in os.environ.items() if k not in REQUIRED} | dict(env)
    return subprocess.run(
        argv,
        cwd=REPO / "infra" / "composecheck",
        env=child,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_compose_file_is_valid_and_matches_the_pinned_kafka_version() -> None:
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    resolved = result.stdout
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", (REPO / "infra/kafka/pom.xml").read_text())
    assert pinned
    assert f"image: apache/kafka:{pinned.group(1)}" in resolved
    assert "healthcheck:" in resolved
    assert "condition: service_healthy" in resolved
    for name, value in SECRETS.items():
        assert f"{name}: {value}" in resolved


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_a_secret_and_says_which(missing: str) -> None:
    result = compose_config(COMPOSE, {k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing} to a random string of 32+ bytes" in result.stderr
    empty = compose_config(COMPOSE, {**SECRETS, missing: ""})  # `:?` refuses an empty value too
    assert empty.returncode != 0
    assert missing in empty.stderr


def test_compose_ships_no_default_secret() -> None:
    text = COMPOSE.read_text()
    for name in REQUIRED:
        forms = re.findall(rf"\$\{{{name}(:?[-?+=]|\}})", text)  # ${X}, ${X:-default}, ${X:?error}, ...
        assert forms, f"{name} is not passed"
        assert set(forms) == {":?"}, f"{name} is not required everywhere: {forms}"


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    hostname: kafka\n", "    hostnme: kafka\n"))
    result = compose_config(broken)
    assert result.returncode != 0
    assert "hostnme" in result.stderr
