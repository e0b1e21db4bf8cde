"""The internal services are closed: they listen on loopback, and the session app answers nobody
without the service credential — not its snapshots, not its analytics, not Faust's own pages."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from infra.process import free_port
from infra.settings import TopicSettings
from tests.harness import SERVICE_HEADERS, ServiceRunner, unique
from tests.pipeline.helpers import start_sessions, start_worker

pytestmark = pytest.mark.integration

ROUTES = (
    "/sessions/c-anyone",
    "/analytics/models/demo",
    "/metrics",
    "/healthz",
    "/readyz",
    "/router/",
    "/table/",
    "/table/sessions/",
    "/table/sessions/c-anyone/",
    "/no-such-page",
)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc writes each 32-bit word in host (little-endian) order.
                words = [raw[i : i + 4][::-1] for i in range(0, width // 2, 4)]
                joined = b"".join(words)
                found.add(".".join(map(str, joined)) if width == 8 else joined.hex())
    return found


def test_the_session_app_refuses_every_route_without_the_service_credential(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    _, url = start_sessions(services, bootstrap, "s-closed", unique("sessions"), data_dir=str(tmp_path / "s"))
    wrong = {"Authorization": "Bearer " + "x" * 64}
    with httpx.Client(base_url=url, timeout=10) as http:
        for route in ROUTES:
            for headers in ({}, wrong, {"Authorization": SERVICE_HEADERS["Authorization"][:-1]}):
                response = http.get(route, headers=headers)
                assert response.status_code == 401, (route, headers, response.text[:200])
                assert response.json()["error"]["code"] == "unauthorized"
                assert "c-anyone" not in response.text
        # With it: the app's own routes answer, and Faust's pages are not there at all.
        assert http.get("/sessions/c-anyone", headers=SERVICE_HEADERS).status_code == 404
        assert http.get("/healthz", headers=SERVICE_HEADERS).status_code == 200
        assert http.get("/metrics", headers=SERVICE_HEADERS).status_code == 200
        for route in ("/router/", "/table/", "/table/sessions/c-anyone/"):
            assert http.get(route, headers=SERVICE_HEADERS).status_code == 404, route
    port = int(url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}


def test_the_session_app_does_not_start_without_a_service_credential(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="TOKENLOG_SERVICE_TOKEN must be set"):
        start_sessions(
            services,
            bootstrap,
            "s-no-token",
            unique("sessions"),
            data_dir=str(tmp_path / "s"),
            env={"TOKENLOG_SERVICE_TOKEN": "short"},
        )


def test_the_worker_listens_on_loopback_only(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    port = free_port()
    start_worker(services, bootstrap, "w-closed", unique("group"), {"TOKENLOG_WORKER_HTTP_PORT": str(port)})
    assert listening_addresses(port) == {"127.0.0.1"}
