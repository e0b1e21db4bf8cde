"""infra/docker-compose.yml passes `docker compose config` (or the same loader, compose-go)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "docker-compose.yml"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`docker compose config` where the compose plugin exists, else compose-go's loader,
    which is what that command runs (schema validation, interpolation, normalisation)."""
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
    return subprocess.run(
        argv, cwd=REPO / "infra" / "composecheck", capture_output=True, text=True, check=False, timeout=600
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


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    hostname: kafka\n", "    hostnme: kafka\n"))
    result = compose_config(broken)
    assert result.returncode != 0
    assert "hostnme" in result.stderr
