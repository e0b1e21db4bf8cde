"""The benchmark report's verdicts and files, from a hand-made result (no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import targets, write_report


def _point(answers: int, p50: float, p99: float, floor50: float, floor99: float, **kw: Any) -> dict[str, Any]:
    latency = {"n": 100, "p50": p50, "p90": p99, "p99": p99, "p99.9": p99 * 2, "max": p99 * 3, "mean": p50}
    return {
        "answers": answers,
        "rate_per_answer": 50.0,
        "tokens_per_delta": kw.get("tokens_per_delta", 1),
        "offered_tokens_per_s": answers * 50.0 * kw.get("tokens_per_delta", 1),
        "sent": 1000,
        "delivered": 1000,
        "devices": 1,
        "sustained": kw.get("sustained", True),
        "latency_ms": {"all": latency, "ws": latency, "sse": latency},
        "floor_ms": {
            "n": 100,
            "p50": floor50,
            "p90": floor99,
            "p99": floor99,
            "p99.9": floor99,
            "max": floor99,
        },
        "gateway_added_ms": {"p50": p50 - floor50, "p90": 0, "p99": p99 - floor99, "p99.9": 0},
        "cpu_us_per_token": 10.0,
        "cpu_utilisation": {"gateway": 0.5, "broker": 0.3},
    }


def test_each_target_gets_the_verdict_its_figures_earn(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "latency": [_point(10, 2, 8, 1.5, 7), _point(200, 4, 20, 3.5, 16)],
        "throughput": [
            _point(400, 3, 30, 2, 20),
            _point(400, 3, 30, 2, 20, tokens_per_delta=10, sustained=False),
        ],
        "idle": {"connections": 10_000, "kib_per_connection": 46.4, "series": [(0, 1000), (10_000, 465_000)]},
        "storm": {"all_live_s": 1.7, "failed": 0},
    }
    verdicts = {row[0]: row[3] for row in targets(results)}
    failed_storm = targets({**results, "storm": {"all_live_s": 1.2, "failed": 3}})
    assert [row[2:] for row in failed_storm if row[0].startswith("reconnect")] == [
        ("3 clients failed", "**missed**")
    ]
    assert verdicts["e2e latency, 200 answers x 50 tok/s"] == "reached"
    assert verdicts["gateway-added over the Kafka floor"] == "reached"  # 0.5 ms and 4 ms
    assert verdicts["throughput, per-token events"] == "reached"  # 20,000 tok/s sustained
    assert verdicts["throughput, coalesced deltas"] == "**missed**"
    assert verdicts["idle WebSocket connections"] == "**missed**"
    assert verdicts["reconnect storm, 1,000 clients"] == "reached"
    assert verdicts["fan-out"] == "not measured"
    summary = write_report(results, tmp_path)
    assert "| e2e latency, 200 answers x 50 tok/s |" in summary
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "summary.md", "latency.png", "memory.png"}


def test_the_cpu_budget_table_puts_kafka_alone_beside_the_system(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "latency": [_point(200, 40, 200, 12, 90)],
        "budget": {"floor_alone": _point(200, 0, 0, 2.5, 31), "no_sessions": _point(200, 14, 95, 4, 38)},
    }
    write_report(results, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    labels = ("| Kafka only", "| gateway and clients", "| full system")
    rows = [line for line in summary.splitlines() if line.startswith(labels)]
    assert rows[0].startswith("| Kafka only: broker, producer, floor consumer | 2.5 | 31 |")
    assert rows[1].startswith("| gateway and clients, no session app | 14 | 95 |")
    assert rows[2].startswith("| full system (session app too) | 40 | 200 |")
    assert rows[0].endswith("| gateway 0.5, broker 0.3 | 0.8 |")


def test_kafka_alone_at_the_per_token_goal_is_reported_beside_the_verdict(tmp_path: Path) -> None:
    behind = {
        **_point(400, 0, 0, 2400, 4300),
        "offered_tokens_per_s": 20_000.0,
        "floor_received": 990,
        "sustained": False,
        "producer_late": {"p99": 310.5},
    }
    results: dict[str, Any] = {
        "throughput": [_point(200, 40, 300, 12, 70), _point(400, 2000, 4000, 1900, 3900, sustained=False)],
        "budget": {
            "floor_alone": _point(200, 0, 0, 2.5, 31),
            "no_sessions": _point(200, 14, 95, 4, 38),
            "floor_ceiling": [behind],
        },
    }
    [row] = [r for r in targets(results) if r[0] == "throughput, per-token events"]
    assert row[2] == (
        "10,000 tok/s sustained; Kafka alone at 20,000 fell behind: floor p50 2400 / p99 4300 ms on 0.8 cores"
    )
    assert row[3] == "**missed**"
    write_report(results, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    table_row = "| 20,000 | 990/1,000 | 2400 | 4300 | 4300 | 310.5 | no | gateway 0.5, broker 0.3 | 0.8 |"
    assert table_row in summary


def test_each_processs_wait_for_a_cpu_is_reported_per_point(tmp_path: Path) -> None:
    point = {
        **_point(200, 9, 90, 5, 50),
        "gateway_delivery_ms": {"n": 1000, "p50": 2.2, "p90": 9.1, "p99": 38.7},
        "cpu_wait": {
            "gateway": {"wait_ms_per_s": 150.0, "mean_wait_ms": 2.1},
            "clients": {"wait_ms_per_s": 20.0, "mean_wait_ms": 0.5},
        },
    }
    write_report({"latency": [_point(10, 2, 8, 1.5, 7), point]}, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| 4 | 40 | 2.2 | 38.7 | 10.0 |" in summary, "added p50 / p99, then in gateway p50 / p99"
    assert "| 1.5 | 7 | 0.5 | 1 | - | - | 10.0 |" in summary, "a point without the gateway's figure"
    assert "| point | clients | gateway |" in summary
    assert "| 200 x 50/s x 1 | 0.5 (20.0) | 2.1 (150.0) |" in summary
    assert "| 10 x 50/s x 1 |" not in summary.split("Waiting for a CPU")[1], "a point without figures"


def test_the_session_apps_cost_per_event_is_reported_beside_faust_alone(tmp_path: Path) -> None:
    full = {
        **_point(200, 40, 200, 12, 90),
        "cpu_utilisation": {"gateway": 0.5, "sessions": 0.25},
        "cpu_wait": {"sessions": {"wait_ms_per_s": 1002.5, "mean_wait_ms": 2.3}},
    }

    def cost(us: float, cores: float, behind: float) -> dict[str, Any]:
        return {
            "events": 120_400,
            "cpu_s": 1.0,
            "us_per_event": us,
            "cores_while_loaded": cores,
            "caught_up_after_s": behind,
            "point": _point(200, 0, 0, 2.5, 31),
        }

    results: dict[str, Any] = {
        "latency": [full],
        "budget": {
            "floor_alone": _point(200, 0, 0, 2.5, 31),
            "no_sessions": _point(200, 14, 95, 4, 38),
            "sessions_alone": cost(71.7, 0.52, 6.4),
            "faust_alone": cost(35.7, 0.36, 0.2),
        },
    }
    write_report(results, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| session app | 71.7 | 0.52 | 6.4 |" in summary
    assert (
        "| Faust alone: an agent that takes each batch and applies nothing | 35.7 | 0.36 | 0.2 |" in summary
    )
    assert (
        "| session app in the full-system point (waited 1002.5 ms per second for a CPU) | - | 0.25 | - |"
        in summary
    )
    assert (
        "Faust's own part is 35.7 of the app's 71.7 µs per event (50 %): at 10,000 events/s, 0.36 cores"
        in summary
    )
    assert "and 0.72 in all." in summary


def test_a_run_without_the_apply_costs_has_no_such_section(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "budget": {"floor_alone": _point(200, 0, 0, 2.5, 31), "no_sessions": _point(200, 14, 95, 4, 38)},
    }
    write_report(results, tmp_path)
    assert "CPU per event" not in (tmp_path / "summary.md").read_text()
