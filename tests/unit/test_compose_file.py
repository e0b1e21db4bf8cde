"""infra/docker-compose.yml loads as `docker compose config` would load it (tests/composecheck.py:
compose's interpolation, the Compose Specification's schema, its cross-references), and the
checker itself refuses what compose refuses."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from tests.composecheck import ComposeError, interpolate, load

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "docker-compose.yml"
REQUIRED = ("TOKENLOG_GATEWAY_SECRET", "TOKENLOG_SERVICE_TOKEN")
"""Variables the compose file refuses to start without (no default secret)."""
SECRETS = {name: secrets.token_urlsafe(48) for name in REQUIRED}


def test_compose_file_is_valid_and_matches_the_pinned_kafka_version() -> None:
    model = load(COMPOSE, SECRETS)
    services = model["services"]
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", (REPO / "infra/kafka/pom.xml").read_text())
    assert pinned
    assert services["kafka"]["image"] == f"apache/kafka:{pinned.group(1)}"
    assert services["kafka"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"]["environment"]["TOKENLOG_TOPIC_PARTITIONS"] == "12"  # the default
    for name, value in SECRETS.items():
        users = {
            s: svc["environment"][name] for s, svc in services.items() if name in svc.get("environment", {})
        }
        assert users, f"no service is given {name}"
        assert set(users.values()) == {value}, users


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_a_secret_and_says_which(missing: str) -> None:
    with pytest.raises(
        ComposeError,
        match=f"required variable {missing} is missing a value: "
        f"set {missing} to a random string of 32\\+ bytes",
    ):
        load(COMPOSE, {k: v for k, v in SECRETS.items() if k != missing})
    with pytest.raises(ComposeError, match=missing):  # `:?` refuses an empty value too
        load(COMPOSE, {**SECRETS, missing: ""})


def test_compose_ships_no_default_secret() -> None:
    text = COMPOSE.read_text()
    for name in REQUIRED:
        forms = re.findall(rf"\$\{{{name}(:?[-?+=]|\}})", text)  # ${X}, ${X:-default}, ${X:?error}, ...
        assert forms, f"{name} is not passed"
        assert set(forms) == {":?"}, f"{name} is not required everywhere: {forms}"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            ("    hostname: kafka\n", "    hostnme: kafka\n"),
            "services.kafka: Additional properties are not allowed ('hostnme'",
        ),
        (("      retries: 30\n", "      retries: [30]\n"), "services.kafka.healthcheck.retries"),
        (
            ("      kafka:\n        condition:", "      kafak:\n        condition:"),
            "undefined service 'kafak'",
        ),
        (("      - kafka-data:/var", "      - kafka-logs:/var"), "undefined volume 'kafka-logs'"),
        (("working_dir: /src", "working_dir: /src/$HOME-"), None),  # $NAME is fine ...
        (
            ("working_dir: /src", "working_dir: /src/$-"),
            "invalid interpolation format",
        ),  # ... a lone $ is not
    ],
)
def test_the_checker_rejects_a_broken_compose_file(
    tmp_path: Path, change: tuple[str, str], error: str | None
) -> None:
    before, after = change
    text = COMPOSE.read_text()
    assert before in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(before, after, 1))
    if error is None:
        load(broken, SECRETS)
    else:
        with pytest.raises(ComposeError, match=re.escape(error)):
            load(broken, SECRETS)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a $$ b", {}, "a $ b"),
        ("$A/${A}", {"A": "x"}, "x/x"),
        ("[$A]", {}, "[]"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("${A:+r}", {"A": "x"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A:?no}", {"A": "x"}, "x"),
        ("${A?no}", {"A": ""}, ""),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(
    ("text", "env", "error"),
    [
        ("${A:?say why}", {"A": ""}, "required variable A is missing a value: say why"),
        ("${A?}", {}, "required variable A is missing a value"),
        ("${A", {}, "unclosed"),
        ("${1A}", {}, "not a variable name"),
        ("${A!x}", {}, "invalid interpolation format"),
        ("50$", {}, "a '$' must start a variable"),
    ],
)
def test_interpolation_refuses_what_compose_refuses(text: str, env: dict[str, str], error: str) -> None:
    with pytest.raises(ComposeError, match=re.escape(error)):
        interpolate(text, env)
