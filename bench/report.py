"""The suite's results as files a person reads: ``results.json``, ``summary.md`` (every target,
measured or not, reached or missed) and PNG plots (latency percentiles against load, resume time
against missed events, gateway memory against connections)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = tuple[str, str, str, str]
MEMORY_WINDOW = 2048
"""Events per conversation the default gateway keeps in memory (TOKENLOG_GATEWAY_WINDOW_EVENTS)."""


def _at(points: list[dict[str, Any]], answers: int) -> dict[str, Any] | None:
    return next((p for p in points if p["answers"] == answers), None)


def targets(results: dict[str, Any]) -> list[Row]:
    """(figure, target, measured, verdict) for every target of issue 9."""
    rows: list[Row] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else "reached" if ok else "**missed**"

    at200 = _at(results.get("latency", []), 200)
    if at200 is not None:
        lat, added = at200["latency_ms"]["all"], at200["gateway_added_ms"]
        ok = lat["p50"] <= 5 and lat["p99"] <= 25 and lat["p99.9"] <= 100
        measured = f"p50 {lat['p50']} / p99 {lat['p99']} / p99.9 {lat['p99.9']} ms"
        rows.append(
            (
                "e2e latency, 200 answers x 50 tok/s",
                "p50 <= 5, p99 <= 25, p99.9 <= 100 ms",
                measured,
                verdict(ok),
            )
        )
        ok = added["p50"] <= 1 and added["p99"] <= 5
        measured = f"p50 {added['p50']} / p99 {added['p99']} ms"
        rows.append(("gateway-added over the Kafka floor", "p50 <= 1, p99 <= 5 ms", measured, verdict(ok)))
    else:
        rows.append(
            (
                "e2e latency, 200 answers x 50 tok/s",
                "p50 <= 5, p99 <= 25, p99.9 <= 100 ms",
                "-",
                verdict(None),
            )
        )
        rows.append(("gateway-added over the Kafka floor", "p50 <= 1, p99 <= 5 ms", "-", verdict(None)))
    through = results.get("throughput", [])
    for label, coalesced, goal in (("per-token events", False, 20_000), ("coalesced deltas", True, 100_000)):
        points = [p for p in through if (p["tokens_per_delta"] > 1) == coalesced]
        best = max((p["offered_tokens_per_s"] for p in points if p.get("sustained")), default=None)
        measured = "-" if not points else f"{best:,.0f} tok/s sustained" if best else "none sustained"
        if not coalesced:
            measured += floor_at_goal(results, goal)
        rows.append(
            (
                f"throughput, {label}",
                f">= {goal:,} tok/s, zero loss/dup",
                measured,
                verdict(None if not points else (best or 0) >= goal),
            )
        )
    resume = results.get("resume", {}).get("points", [])
    # The default gateway keeps 2,048 events per conversation in memory: more missed is a seek.
    memory = [p["first_event"] for p in resume if p["path"] == "memory" and p["missed"] <= MEMORY_WINDOW]
    if memory:
        p50, p99 = max(m["p50_ms"] for m in memory), max(m["p99_ms"] for m in memory)
        rows.append(
            (
                "resume, memory window",
                "p50 <= 5, p99 <= 20 ms",
                f"p50 {p50} / p99 {p99} ms (worst point, <= {MEMORY_WINDOW:,} missed)",
                verdict(p50 <= 5 and p99 <= 20),
            )
        )
    seek = [p["first_event"] for p in resume if p["path"] == "seek" and p["missed"] == 1000]
    if seek:
        p99 = max(s["p99_ms"] for s in seek)
        rows.append(("resume, seek path, 1,000 missed", "p99 <= 50 ms", f"p99 {p99} ms", verdict(p99 <= 50)))
    else:
        rows.append(("resume, seek path, 1,000 missed", "p99 <= 50 ms", "-", verdict(None)))
    traffic = [t for t in results.get("traffic", []) if t.get("batches", "large") == "large"]
    if traffic:
        p99s = {(t["other_events"], t["transport"]): t["first_event"]["p99_ms"] for t in traffic}
        worst = max(p99s.values())
        by_other = sorted({o for o, _ in p99s})
        spread = max(p99s[(by_other[-1], tr)] / max(0.001, p99s[(by_other[0], tr)]) for tr in ("ws", "sse"))
        measured = ", ".join(f"{o:,}: {max(p99s[(o, 'ws')], p99s[(o, 'sse')])} ms" for o in by_other)
        rows.append(
            (
                f"seek resume ({traffic[0]['missed']:,} missed) vs unrelated events in the partition",
                "p99 <= 50 ms, flat",
                f"p99 by other events: {measured}",
                verdict(worst <= 50 and spread <= 2),
            )
        )
    idle = results.get("idle")
    if idle:
        ok = idle["connections"] >= 10_000 and idle["kib_per_connection"] <= 40
        rows.append(
            (
                "idle WebSocket connections",
                ">= 10,000 at <= 40 KiB each",
                f"{idle['connections']:,} at {idle['kib_per_connection']} KiB",
                verdict(ok),
            )
        )
    fan = results.get("fanout")
    rows.append(
        (
            "fan-out",
            ">= 30,000 frames/s per core",
            f"{fan['frames_per_core_s']:,.0f}" if fan else "-",
            verdict(None if not fan else fan["frames_per_core_s"] >= 30_000),
        )
    )
    storm = results.get("storm")
    rows.append(
        (
            "reconnect storm, 1,000 clients",
            "all live within 5 s",
            (f"{storm['all_live_s']} s" if not storm["failed"] else f"{storm['failed']} clients failed")
            if storm
            else "-",
            verdict(None if not storm else not storm["failed"] and storm["all_live_s"] <= 5),
        )
    )
    return rows


def point_label(point: dict[str, Any]) -> str:
    """A load point as the tables name it: "200 x 50/s x 1" (answers, deltas/s each, tokens a delta)."""
    return f"{point['answers']} x {point['rate_per_answer']:.0f}/s x {point['tokens_per_delta']}"


def cpu_by_process(point: dict[str, Any]) -> tuple[str, float]:
    """A point's CPU by process, largest first ("gateway 0.5, broker 0.3"), and its total in cores."""
    use: dict[str, float] = point.get("cpu_utilisation", {})
    by_process = ", ".join(f"{k} {v}" for k, v in sorted(use.items(), key=lambda kv: -kv[1]))
    return by_process, round(sum(use.values()), 2)


def floor_at_goal(results: dict[str, Any], goal: float) -> str:
    """What Kafka alone (broker, producer, floor consumer) did at the goal's load, if measured."""
    at = [p for p in results.get("budget", {}).get("floor_ceiling", []) if p["offered_tokens_per_s"] >= goal]
    if not at:
        return ""
    p = at[0]
    kept = "kept up" if p.get("sustained") else "fell behind"
    return (
        f"; Kafka alone at {p['offered_tokens_per_s']:,.0f} {kept}: floor p50 {p['floor_ms'].get('p50')} / "
        f"p99 {p['floor_ms'].get('p99')} ms on {cpu_by_process(p)[1]} cores"
    )


def budget_markdown(results: dict[str, Any]) -> list[str]:
    """The e2e target's load with fewer processes sharing the machine, beside the full system."""
    budget = results.get("budget")
    if not budget:
        return []
    answers = budget["floor_alone"]["answers"]
    rows = [
        ("Kafka only: broker, producer, floor consumer", budget["floor_alone"], "floor_ms"),
        ("gateway and clients, no session app", budget["no_sessions"], "latency_ms"),
    ]
    full = next((p for p in results.get("latency", []) if p["answers"] == answers), None)
    if full is not None:
        rows.append(("full system (session app too)", full, "latency_ms"))
    out = [
        "",
        f"## Where the CPU goes at {answers} answers x 50 tok/s (ms; CPU in cores, 2 on this machine)",
        "",
    ]
    out += ["| processes | p50 | p99 | p99.9 | floor p50 | floor p99 | CPU by process | CPU total |"]
    out += ["| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, p, key in rows:
        lat = p[key] if key == "floor_ms" else p[key]["all"]
        cpu, total = cpu_by_process(p)
        floor = p["floor_ms"]
        out.append(
            f"| {label} | {lat.get('p50')} | {lat.get('p99')} | {lat.get('p99.9')} "
            f"| {floor.get('p50')} | {floor.get('p99')} | {cpu} | {total} |"
        )
    out += apply_cost_markdown(budget, full)
    ceiling = budget.get("floor_ceiling", [])
    if ceiling:
        out += ["", "## Kafka alone at higher per-token loads (broker, producer, floor consumer; ms)", ""]
        columns = ["tok/s", "received", "floor p50", "floor p99", "floor p99.9", "producer late p99"]
        columns += ["kept up", "CPU by process", "CPU total"]
        out += ["| " + " | ".join(columns) + " |"]
        out += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in ceiling:
            cpu, total = cpu_by_process(p)
            floor, late = p["floor_ms"], p.get("producer_late", {})
            out.append(
                f"| {p['offered_tokens_per_s']:,.0f} | {p.get('floor_received', 0):,}/{p['sent']:,} "
                f"| {floor.get('p50')} | {floor.get('p99')} | {floor.get('p99.9')} | {late.get('p99', '-')} "
                f"| {'yes' if p.get('sustained') else 'no'} | {cpu} | {total} |"
            )
    return out


def apply_cost_markdown(budget: dict[str, Any], full: dict[str, Any] | None) -> list[str]:
    """The session app's CPU per event beside Faust's own (``bench.faust_floor``), each measured
    with Kafka only at the e2e target's load, and what the app got in the full-system point."""
    apps = (
        ("session app", budget.get("sessions_alone")),
        ("Faust alone: an agent that takes each batch and applies nothing", budget.get("faust_alone")),
    )
    rows = [(label, cost) for label, cost in apps if cost]
    if not rows:
        return []
    out = [
        "",
        "## The session app's CPU per event at this load (with Kafka only, then in the full system)",
        "",
    ]
    out += ["| app | µs per event | cores while the load ran | caught up after the load (s) |"]
    out += ["| --- | --- | --- | --- |"]
    for label, cost in rows:
        cells = (cost["us_per_event"], cost["cores_while_loaded"], cost["caught_up_after_s"])
        out.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    got = (full or {}).get("cpu_utilisation", {}).get("sessions")
    if got is not None:
        wait = (full or {}).get("cpu_wait", {}).get("sessions", {}).get("wait_ms_per_s", "-")
        label = f"session app in the full-system point (waited {wait} ms per second for a CPU)"
        out.append(f"| {label} | - | {got} | - |")
    sessions, faust = budget.get("sessions_alone"), budget.get("faust_alone")
    if sessions and faust and sessions["us_per_event"] > 0:
        rate = sessions["point"]["offered_tokens_per_s"]
        share = round(100 * faust["us_per_event"] / sessions["us_per_event"])
        out += [
            "",
            f"Faust's own part is {faust['us_per_event']} of the app's {sessions['us_per_event']} µs per "
            f"event ({share} %): at {rate:,.0f} events/s, {faust['us_per_event'] * rate / 1e6:.2f} cores "
            f"before the app applies anything, and {sessions['us_per_event'] * rate / 1e6:.2f} in all.",
        ]
    return out


def summary_markdown(results: dict[str, Any]) -> str:
    out = [f"# tokenlog benchmark summary ({results.get('started', '')})", ""]
    out += ["| figure | target | measured | verdict |", "| --- | --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(results)]
    out += ["", "## End-to-end latency by load (ms; system = through the gateway, floor = raw aiokafka)", ""]
    out += [
        "added = system minus floor; in gateway = from the tail reader taking a record from the log to "
        "its frame written to the socket (the gateway's `tokenlog_gateway_delivery_seconds`, one frame "
        "in 8, interpolated within buckets). The rest of the added time is the gateway's fetch trailing "
        "the floor's and the hop from the socket into the clients process.",
        "",
    ]
    columns = ["answers", "tok/s", "delivered", "p50", "p90", "p99", "p99.9", "max"]
    columns += ["floor p50", "floor p99", "added p50", "added p99", "in gateway p50", "in gateway p99"]
    columns += ["CPU us/token"]
    out += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for p in results.get("latency", []) + results.get("throughput", []):
        lat, floor, added = p["latency_ms"]["all"], p["floor_ms"], p["gateway_added_ms"]
        inside = p.get("gateway_delivery_ms", {})
        out.append(
            f"| {point_label(p)} | {p['offered_tokens_per_s']:,.0f} "
            f"| {p['delivered']:,}/{p['sent']:,} | {lat.get('p50')} | {lat.get('p90')} | {lat.get('p99')} "
            f"| {lat.get('p99.9')} | {lat.get('max')} | {floor.get('p50')} | {floor.get('p99')} "
            f"| {added.get('p50')} | {added.get('p99')} | {inside.get('p50', '-')} "
            f"| {inside.get('p99', '-')} | {p['cpu_us_per_token']} |"
        )
    points = results.get("latency", []) + results.get("throughput", [])
    if points:
        names = sorted({name for p in points for name in p.get("cpu_utilisation", {})})
        out += ["", "## CPU by process over each measured window (1.0 = one core; this machine has 2)", ""]
        out += ["| point | " + " | ".join(names) + " | total |", "|" + " --- |" * (len(names) + 2)]
        for p in points:
            use = p.get("cpu_utilisation", {})
            cells = " | ".join(str(use.get(n, "")) for n in names)
            out.append(f"| {point_label(p)} | {cells} | {round(sum(use.values()), 2)} |")
        waits = [p for p in points if p.get("cpu_wait")]
        if waits:
            names = sorted({name for p in waits for name in p["cpu_wait"]})
            out += [
                "",
                "## Waiting for a CPU: mean run-queue wait per wake-up, ms (and ms waited per second)",
                "",
                "Each hop between processes (broker, gateway, clients) waits this long, on average, "
                "before it runs; the system path has two hops more than the floor's.",
                "",
            ]
            out += ["| point | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
            for p in waits:
                wait = p["cpu_wait"]
                cells = " | ".join(
                    f"{wait[n]['mean_wait_ms']} ({wait[n]['wait_ms_per_s']})" if n in wait else ""
                    for n in names
                )
                out.append(f"| {point_label(p)} | {cells} |")
    out += budget_markdown(results)
    resume = results.get("resume", {}).get("points", [])
    if resume:
        out += ["", "## Resume: connect to first missed event (ms)", ""]
        out += [
            "| path | transport | missed | resumes | p50 | p90 | p99 | all missed p50 | bench GC max "
            "| gateway GCs > 5 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in resume:
            f, a = r["first_event"], r["all_events"]
            out.append(
                f"| {r['path']} | {r['transport']} | {r['missed']} | {f['n']} "
                f"| {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} | {a['p50_ms']} "
                f"| {r.get('client_gc_max_ms', '-')} | {r.get('gateway_gc_over_5ms', '-')} |"
            )
    traffic = results.get("traffic", [])
    if traffic:
        out += ["", "## Seek resume against unrelated traffic in the same partition (ms)", ""]
        out += ["| other events | written in | transport | missed | first p50 | first p99 | all missed p50 |"]
        out += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for t in traffic:
            f, a = t["first_event"], t["all_events"]
            out.append(
                f"| {t['other_events']:,} | {t.get('batches', 'large')} batches | {t['transport']} "
                f"| {t['missed']} | {f['p50_ms']} | {f['p99_ms']} | {a['p50_ms']} |"
            )
    out += ["", "Plots: `latency.png`, `resume.png`, `memory.png`.", ""]
    return "\n".join(out)


def plots(results: dict[str, Any], out: Path) -> None:
    latency = results.get("latency", [])
    if latency:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        loads = [p["answers"] for p in latency]
        for name, marker, color in (
            ("p50", "o", "tab:blue"),
            ("p99", "s", "tab:orange"),
            ("p99.9", "^", "tab:red"),
        ):
            system = [p["latency_ms"]["all"].get(name) for p in latency]
            floor = [p["floor_ms"].get(name) for p in latency]
            ax.plot(loads, system, marker + "-", color=color, label=f"system {name}")
            ax.plot(loads, floor, marker + ":", color=color, alpha=0.45, label=f"Kafka floor {name}")
        ax.set(xlabel="concurrent answers (50 tokens/s each)", ylabel="token latency (ms)", yscale="log",
               title="End-to-end token latency vs load")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=120)
        plt.close(fig)
    resume = results.get("resume", {}).get("points", [])
    if resume:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for path in sorted({r["path"] for r in resume}):
            for transport in ("ws", "sse"):
                pts = sorted(
                    (r["missed"], r["first_event"])
                    for r in resume
                    if r["path"] == path and r["transport"] == transport
                )
                if pts:
                    ax.plot(
                        [m for m, _ in pts],
                        [f["p50_ms"] for _, f in pts],
                        "o-",
                        label=f"{path} {transport} p50",
                    )
                    ax.plot(
                        [m for m, _ in pts],
                        [f["p99_ms"] for _, f in pts],
                        "o--",
                        alpha=0.5,
                        label=f"{path} {transport} p99",
                    )
        ax.set(xlabel="missed events", ylabel="reconnect → first missed event (ms)", xscale="log",
               title="Resume time vs missed events, by path")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "resume.png", dpi=120)
        plt.close(fig)
    idle = results.get("idle")
    if idle and idle.get("series"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        series = idle["series"]
        ax.plot([c for c, _ in series], [kib / 1024 for _, kib in series], "o-", label="gateway RSS")
        ax.set(xlabel="idle WebSocket connections", ylabel="resident memory (MiB)",
               title=f"Gateway memory vs connections ({idle['kib_per_connection']} KiB each)")  # fmt: skip
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=120)
        plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    summary = summary_markdown(results)
    (out / "summary.md").write_text(summary + "\n")
    plots(results, out)
    return summary
