"""`make bench`'s verdicts and report: ratios to the baseline, the targets checked, the
markdown table, and a description of the machine the figures come from."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "evaluate", "machine", "markdown"]

TARGETS = {
    "sqlite_throughput_ratio": 0.60,
    "sqlite_throughput_p99_ms": 25.0,
    "contention_p99_ms": 50.0,
    "memory_growth_pct": 10.0,
}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {}
    for package in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson",
                    "aioboto3", "limits"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "sqlite": __import__("sqlite3").sqlite_version, "packages": versions,
            "load_average_at_start": os.getloadavg()}


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return round(value / ceiling, 3) if value and ceiling else None


def evaluate(results: dict[str, Any]) -> None:
    """Add ratios to the baseline and the target verdicts to the results."""
    for run in results["runs"]:
        base = results["baseline"].get(str(run["workers"]), {})
        for scenario in run["scenarios"].values():
            scenario["ratio_to_baseline"] = _ratio(scenario["throughput_rps"],
                                                   base.get("throughput_rps"))
            base_cpu = base.get("server", {}).get("cpu_us_per_request")
            cpu = scenario["server"]["cpu_us_per_request"]
            scenario["baseline_cpu_over_cpu"] = _ratio(base_cpu, cpu)
        checks = []
        contention = run["scenarios"].get("contention")
        if contention:
            checks.append(("contention: exactly 100 winners, the rest 409",
                           contention["winners"] == 100
                           and contention["status"].get("409", 0) == contention["requests"] - 100))
            checks.append((f"contention p99 <= {TARGETS['contention_p99_ms']} ms",
                           (contention["latency_ms"]["p99"] or 1e9)
                           <= TARGETS["contention_p99_ms"]))
        throughput = run["scenarios"].get("throughput")
        if throughput and run["store"] == "sqlite":
            checks.append((f"throughput >= {TARGETS['sqlite_throughput_ratio']:.0%} of baseline",
                           (throughput["ratio_to_baseline"] or 0)
                           >= TARGETS["sqlite_throughput_ratio"]))
            checks.append((f"throughput p99 <= {TARGETS['sqlite_throughput_p99_ms']} ms",
                           (throughput["latency_ms"]["p99"] or 1e9)
                           <= TARGETS["sqlite_throughput_p99_ms"]))
        replay = run["scenarios"].get("replay")
        if replay:
            checks.append(("replay: every repeated owner got its sandbox back",
                           replay["replay"]["mismatched"] == 0
                           and replay["replay"]["attempted"] > 0))
        checks.append(("no double allocation (answers + verify)", run["verify"]["ok"] and all(
            s["double_allocations"] == 0 for s in run["scenarios"].values())))
        run["checks"] = [{"check": name, "ok": bool(ok)} for name, ok in checks]
    memory = results.get("memory")
    if memory:
        memory["checks"] = [{"check": f"RSS growth < {TARGETS['memory_growth_pct']}%",
                             "ok": memory["growth_pct"] < TARGETS["memory_growth_pct"]}]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark {results['date']}",
        "",
        f"{m['cores']} cores ({m['cpu']}), {m['memory_mib']} MiB, Linux {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}; load generator on the same machine "
        f"(app/loadgen/runner.py, raw HTTP/1.1 client). Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}.",
        "",
        "| store | workers | scenario | req/s | created/s | vs baseline | p50 ms | p95 ms "
        "| p99 ms | max ms | statuses | server CPU µs/req | RSS MiB before->after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, base in sorted(results["baseline"].items()):
        lat = base["latency_ms"]
        lines.append(
            f"| baseline | {workers} | minimal FastAPI POST | {_fmt(base['throughput_rps'])} | - "
            f"| 1.00 | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} "
            f"| {_fmt(lat['max'])} | {_statuses(base)} | "
            f"{_fmt(base['server']['cpu_us_per_request'])} | "
            f"{base['server']['rss_mib_before']}->{base['server']['rss_mib_after']} |")
        burst = base.get("contention")
        if burst:
            lat = burst["latency_ms"]
            lines.append(
                f"| baseline | {workers} | minimal FastAPI POST, 300 at once | "
                f"{_fmt(burst['throughput_rps'])} | - | - | {_fmt(lat['p50'])} "
                f"| {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {_fmt(lat['max'])} "
                f"| {_statuses(burst)} | {_fmt(burst['server']['cpu_us_per_request'])} | "
                f"{burst['server']['rss_mib_before']}->{burst['server']['rss_mib_after']} |")
    for run in results["runs"]:
        lines += _run_rows(run)
    memory = results.get("memory")
    if memory:
        rss = memory["rss_mib"]
        lines += ["", f"Memory: {memory['allocations']:,} allocations on SQLite, 1 worker, at "
                  f"{_fmt(memory['throughput_rps'])} req/s: RSS {rss['start']} MiB at start, "
                  f"{rss['after_warmup']} MiB after a 20,000-allocation warm-up, {rss['end']} "
                  f"MiB at the end: growth {memory['growth_pct']}%."]
    lines += ["", "| run | check | result |", "|---|---|---|"]
    for run in results["runs"]:
        for check in run["checks"]:
            lines.append(f"| {run['store']} x{run['workers']} | {check['check']} | "
                         f"{'PASS' if check['ok'] else 'MISS'} |")
    for check in (memory or {}).get("checks", []):
        lines.append(f"| memory | {check['check']} | {'PASS' if check['ok'] else 'MISS'} |")
    seeds = [f"{r['store']} x{r['workers']}: {r['pool']:,} in {r['seed_s']} s"
             for r in results["runs"] if "seed_s" in r]
    if seeds:
        lines += ["", "Seeding (`sandbox-broker seed`): " + "; ".join(seeds) + "."]
    return "\n".join(lines) + "\n"


def _run_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for name in ("throughput", "contention", "replay"):
        s = run["scenarios"].get(name)
        if s is None:
            continue
        lat = s["latency_ms"]
        label = name
        if name == "throughput":
            label = f"throughput (pool {run['pool']:,})"
        elif name == "contention":
            label = f"contention ({s['winners']} winners)"
        elif name == "replay":
            label = f"replay 30% ({s['replay']['matched']}/{s['replay']['attempted']} matched)"
        rows.append(
            f"| {run['store']} | {run['workers']} | {label} | {_fmt(s['throughput_rps'])} "
            f"| {_fmt(s['created_per_s'])} | {_fmt(s.get('ratio_to_baseline'))} "
            f"| {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} "
            f"| {_fmt(lat['max'])} | {_statuses(s)} "
            f"| {_fmt(s['server']['cpu_us_per_request'])} "
            f"| {s['server']['rss_mib_before']}->{s['server']['rss_mib_after']} |")
    return rows


def _statuses(summary: dict[str, Any]) -> str:
    parts = [f"{k}x{v}" for k, v in summary["status"].items()]
    parts += [f"{k}x{v}" for k, v in summary.get("transport_errors", {}).items()]
    return " ".join(parts) or "-"
