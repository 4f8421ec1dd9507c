"""The results table (and the machine it ran on)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

WARM_P50_TARGET = 2.5
COLD_P50_TARGET = 2.0
TIMES = "\N{MULTIPLICATION SIGN}"


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    return {
        "code": code_state(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def code_state() -> str:
    """The commit measured, and whether the product's code differed from it (the tree may be dirty)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "runtime_api", "sandbox", "bootstrap"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} + {len(dirty)} uncommitted file(s) in runtime_api/ sandbox/ bootstrap/" if dirty else head


def _row(
    metric: str,
    service: float,
    floor: float,
    unit: str,
    *,
    higher_is_better: bool = False,
    target: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """`ratio` is always "times worse than the floor": latency service/floor, rate floor/service."""
    worse, better = (floor, service) if higher_is_better else (service, floor)
    ratio = worse / better if better else math.inf
    status = "" if target is None else ("PASS" if ratio <= target else "SHORT")
    return {
        "metric": metric,
        "service": service,
        "floor": floor,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "status": status,
        "note": note,
    }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if raw := results.get("warm_raw"):
        s, f = raw["service"], raw["floor"]
        out.append(_row("warm p50, http.client", s["p50"], f["p50"], "ms", target=WARM_P50_TARGET))
        out.append(_row("warm p99, http.client", s["p99"], f["p99"], "ms"))
    if b := results.get("warm_boto3"):
        s, f = b["service"], b["floor"]
        out.append(_row("warm p50, boto3 invoke", s["p50"], f["p50"], "ms"))
        out.append(_row("warm p99, boto3 invoke", s["p99"], f["p99"], "ms"))
        if raw:
            out.append(
                _row(
                    "warm p50, boto3 vs http.client",
                    s["p50"],
                    raw["service"]["p50"],
                    "ms",
                    note="service only: boto3 invoke p50 / http.client invoke p50",
                )
            )
    for key, client in (("throughput_raw", "http.client"), ("throughput_boto3", "boto3")):
        if t := results.get(key):
            label = f"throughput, {t['threads']} threads, {client}"
            out.append(_row(label, t["service"]["rps"], t["floor"]["rps"], "req/s", higher_is_better=True))
    if c := results.get("cold"):
        s, f = c["service"], c["floor"]
        out.append(_row("cold start p50", s["p50"], f["p50"], "ms", target=COLD_P50_TARGET))
        out.append(_row("cold start p90", s["p90"], f["p90"], "ms"))
    return out


def table(table_rows: list[dict[str, Any]]) -> str:
    header = ("metric", "service", "floor", "ratio", "target", "result")
    lines = []
    for r in table_rows:
        digits = 0 if r["unit"] == "req/s" else 2
        lines.append(
            (
                r["metric"],
                f"{r['service']:.{digits}f} {r['unit']}",
                f"{r['floor']:.{digits}f} {r['unit']}",
                f"{r['ratio']:.2f}x",
                "" if r["target"] is None else f"<= {r['target']:g}x",
                r["status"],
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def markdown(table_rows: list[dict[str, Any]]) -> str:
    out = ["| metric | service | floor | ratio | target | result |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in table_rows:
        digits = 0 if r["unit"] == "req/s" else 2
        target = "" if r["target"] is None else f"≤ {r['target']:g}{TIMES}"
        out.append(
            f"| {r['metric']} | {r['service']:.{digits}f} {r['unit']} | {r['floor']:.{digits}f} {r['unit']} "
            f"| {r['ratio']:.2f}{TIMES} | {target} | {r['status']} |"
        )
    return "\n".join(out)


def breakdown(results: dict[str, Any]) -> str:
    lines = []
    if churn := results.get("warm_service_pool"):
        lines.append(
            f"warm service: {churn['prestarted']} environments pre-started; {churn['cold_starts']} more started on "
            f"demand during the warm and throughput parts (0 expected: see docs/performance.md); "
            f"{churn['environments']} at the end"
        )
    for key, label in (("warm_raw", "http.client"), ("warm_boto3", "boto3")):
        if w := results.get(key):
            lines.append(f"warm p50 ratio, {label}, in each fifth of the run: {_fmt(w['p50_ratio_by_block'], 2)}")
    if c := results.get("cold"):
        lines.append(
            "cold start parts (p50): service-reported Init Duration (spawn -> first /next) "
            f"{c['service_init_duration_ms']['p50']:.1f} ms; bwrap + /usr/bin/true {c['bwrap_true']['p50']:.1f} ms; "
            f"{c['interpreter']} -c pass without a sandbox {c['python_pass_unsandboxed']['p50']:.1f} ms; "
            f"bwrap + python importing the bootstrap {c['bwrap_import_bootstrap']['p50']:.1f} ms"
        )
    for key, label in (("throughput_raw", "http.client"), ("throughput_boto3", "boto3")):
        if t := results.get(key):
            lines.append(
                f"throughput {label}: per-round req/s floor {_fmt(t['floor']['rounds_rps'])}, "
                f"service {_fmt(t['service']['rounds_rps'])}; errors floor {t['floor']['errors']}, "
                f"service {t['service']['errors']}; p50 under load floor {t['floor']['latency_ms_p50']:.2f} ms, "
                f"service {t['service']['latency_ms_p50']:.2f} ms"
            )
    return "\n".join(lines)


def _fmt(values: list[float], digits: int = 0) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"
