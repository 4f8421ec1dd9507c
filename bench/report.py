"""The results table (and the machine it ran on)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

WARM_P50_TARGET = 1.6  # issue 6: warm p50 against a bare Starlette echo on the same stack
# issue 6: at least 0.75x the echo's requests/s with 8 client threads; as a ratio (floor / service) <= 1/0.75
THROUGHPUT_TARGET = 1 / 0.75
COLD_P50_TARGET = 1.3  # issue 6: with pre-started generic sandboxes
SCALE_P50_TARGET = 1.5  # warm p50 with 200 warm environments against 1
MEMORY_BUDGET_MB = 20.0  # an idle warm environment: the sum of its processes' RSS
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
            target = THROUGHPUT_TARGET if client == "http.client" else None
            out.append(
                _row(label, t["service"]["rps"], t["floor"]["rps"], "req/s", higher_is_better=True, target=target)
            )
    if c := results.get("cold"):
        s, f = c["service"], c["floor"]
        out.append(_row("cold start p50", s["p50"], f["p50"], "ms", target=COLD_P50_TARGET))
        out.append(_row("cold start p90", s["p90"], f["p90"], "ms"))
        n = c["from_nothing"]
        out.append(_row("cold start p50, no generic sandboxes", n["p50"], f["p50"], "ms"))
        out.append(_row("cold start p90, no generic sandboxes", n["p90"], f["p90"], "ms"))
    return out


def docker_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The Docker backend against bwrap: `service` is docker, `floor` is bwrap, ratio docker/bwrap."""
    out = []
    if c := results.get("docker_cold"):
        out.append(_row("cold start p50", c["docker"]["p50"], c["bwrap"]["p50"], "ms"))
        out.append(_row("cold start p90", c["docker"]["p90"], c["bwrap"]["p90"], "ms"))
    if w := results.get("docker_warm"):
        out.append(_row("warm p50, http.client", w["docker"]["p50"], w["bwrap"]["p50"], "ms"))
        out.append(_row("warm p90, http.client", w["docker"]["p90"], w["bwrap"]["p90"], "ms"))
    return out


def session_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Agent sessions against baselines of the same run: `service` is the session's, `floor` the baseline."""
    s = results.get("sessions")
    if not s:
        return []
    start = s["sandbox_start"]
    return [
        _row("create, warm pool, p50 (vs bare sandbox start)", s["create_warm"]["p50"], start["p50"], "ms"),
        _row("create, no pool, p50 (vs bare sandbox start)", s["create_cold"]["p50"], start["p50"], "ms"),
        _row("create, no pool, p90 (vs bare sandbox start)", s["create_cold"]["p90"], start["p90"], "ms"),
        _row("execute_code p50 (vs warm invoke)", s["execute_code"]["p50"], s["execute_code_invoke"]["p50"], "ms"),
        _row("execute_code p99 (vs warm invoke)", s["execute_code"]["p99"], s["execute_code_invoke"]["p99"], "ms"),
        _row("execute p50 (vs warm invoke)", s["execute"]["p50"], s["execute_invoke"]["p50"], "ms"),
    ]


def scale_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Many warm environments against one (`bench/scale.py`): `service` is the many, `floor` the one (or the
    memory budget)."""
    s = results.get("scale")
    if not s:
        return []
    n, one = s["count"], s["one"]
    out = [
        _row(f"warm p50, {n} functions x 1 env, round-robin", s["functions_round_robin"]["p50"], one["p50"], "ms",
             target=SCALE_P50_TARGET),
        _row(f"warm p50, {n} functions x 1 env, same function", s["functions_same"]["p50"], one["p50"], "ms",
             target=SCALE_P50_TARGET),
        _row(f"warm p50, 1 function x {n} envs", s["environments"]["p50"], one["p50"], "ms", target=SCALE_P50_TARGET),
        _row(f"warm p90, {n} functions x 1 env, round-robin", s["functions_round_robin"]["p90"], one["p90"], "ms"),
        _row(f"warm p50, 1-env service alone, {2 * n} idle envs beside it / none", s["after"]["p50"],
             s["before"]["p50"], "ms"),
    ]  # fmt: skip
    mem = s["memory"]["functions"]
    if "rss" in mem:
        out += [
            _row("idle env, sum of RSS, median (vs budget)", mem["rss"]["median"], MEMORY_BUDGET_MB, "MB", target=1.0),
            _row(f"idle sandbox, sum of RSS, largest of {mem['environments']} (vs budget)", mem["rss"]["max"],
                 MEMORY_BUDGET_MB, "MB", target=1.0),
            _row("idle env, sum of PSS, median (vs budget)", mem["pss"]["median"], MEMORY_BUDGET_MB, "MB"),
        ]  # fmt: skip
    services = s["services"]
    out += [
        _row(f"service RSS, 1 function x {n} envs (vs 1 env)", services["environments"]["rss_mb"],
             services["one"]["rss_mb"], "MB"),
        _row(f"service RSS, {n} functions x 1 env (vs 1 env)", services["functions"]["rss_mb"],
             services["one"]["rss_mb"], "MB"),
    ]  # fmt: skip
    return out


def table(table_rows: list[dict[str, Any]], columns: tuple[str, str] = ("service", "floor")) -> str:
    targets = any(r["target"] is not None for r in table_rows)  # else no target and result columns
    header = ("metric", *columns, "ratio", "target", "result")[: None if targets else 4]
    lines = []
    for r in table_rows:
        digits = 0 if r["unit"] == "req/s" else 2
        line = (
            r["metric"],
            f"{r['service']:.{digits}f} {r['unit']}",
            f"{r['floor']:.{digits}f} {r['unit']}",
            f"{r['ratio']:.2f}x",
            "" if r["target"] is None else f"<= {r['target']:g}x",
            r["status"],
        )
        lines.append(line[: len(header)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def markdown(table_rows: list[dict[str, Any]], columns: tuple[str, str] = ("service", "floor")) -> str:
    targets = any(r["target"] is not None for r in table_rows)  # else no target and result columns
    out = [
        f"| metric | {columns[0]} | {columns[1]} | ratio |" + (" target | result |" if targets else ""),
        "| --- | ---: | ---: | ---: |" + (" ---: | --- |" if targets else ""),
    ]
    for r in table_rows:
        digits = 0 if r["unit"] == "req/s" else 2
        target = "" if r["target"] is None else f"≤ {r['target']:g}{TIMES}"
        out.append(
            f"| {r['metric']} | {r['service']:.{digits}f} {r['unit']} | {r['floor']:.{digits}f} {r['unit']} "
            f"| {r['ratio']:.2f}{TIMES} |" + (f" {target} | {r['status']} |" if targets else "")
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
            "cold start parts (p50): service-reported Init Duration (spawn or assignment -> first /next) "
            f"{c['service_init_duration_ms']['p50']:.1f} ms with generic sandboxes, "
            f"{c['from_nothing_init_duration_ms']['p50']:.1f} ms without; "
            f"bwrap + /usr/bin/true {c['bwrap_true']['p50']:.1f} ms; "
            f"{c['interpreter']} -c pass without a sandbox {c['python_pass_unsandboxed']['p50']:.1f} ms; "
            f"bwrap + python importing the bootstrap {c['bwrap_import_bootstrap']['p50']:.1f} ms"
        )
    if c := results.get("docker_cold"):
        init, pair = c["init_duration_ms"], c["pair_ratio"]
        lines.append(
            f"docker against bwrap, cold start: docker/bwrap of each back-to-back pair p10 {pair['p10']:.2f}, "
            f"p50 {pair['p50']:.2f}, p90 {pair['p90']:.2f}; service-reported Init Duration p50 "
            f"docker {init['docker']['p50']:.1f} ms, bwrap {init['bwrap']['p50']:.1f} ms; "
            f"slowest docker {c['docker']['max']:.1f} ms, bwrap {c['bwrap']['max']:.1f} ms; bwrap p50 when it went "
            f"first {c['bwrap_by_order']['first']['p50']:.1f} ms, right after a docker start "
            f"{c['bwrap_by_order']['after_docker']['p50']:.1f} ms"
        )
    if s := results.get("sessions"):
        lines.append(
            f"sessions (p50): create with the pool {s['create_warm']['p50']:.2f} ms, without "
            f"{s['create_cold']['p50']:.1f} ms ({s['pool_size']} pre-started); time inside the sandbox, as the "
            f"agent measured it: execute_code {s['execute_code_in_agent']['p50']:.1f} ms, execute "
            f"{s['execute_in_agent']['p50']:.1f} ms"
        )
    if w := results.get("docker_warm"):
        starts = w["cold_starts"]
        lines.append(
            f"docker against bwrap, warm p50 ratio in each fifth of the run: {_fmt(w['p50_ratio_by_block'], 2)}; "
            f"p99 docker {w['docker']['p99']:.2f} ms, bwrap {w['bwrap']['p99']:.2f} ms; environments started: "
            f"docker {starts['docker']}, bwrap {starts['bwrap']} (1 each expected: the first warm-up invoke)"
        )
    if s := results.get("scale"):
        lines += _scale_breakdown(s)
    for key, label in (("throughput_raw", "http.client"), ("throughput_boto3", "boto3")):
        if t := results.get(key):
            lines.append(
                f"throughput {label}: per-round req/s floor {_fmt(t['floor']['rounds_rps'])}, "
                f"service {_fmt(t['service']['rounds_rps'])}; errors floor {t['floor']['errors']}, "
                f"service {t['service']['errors']}; p50 under load floor {t['floor']['latency_ms_p50']:.2f} ms, "
                f"service {t['service']['latency_ms_p50']:.2f} ms"
            )
    return "\n".join(lines)


def _scale_breakdown(s: dict[str, Any]) -> list[str]:
    n, services = s["count"], s["services"]
    lines = [
        f"scale: all {n} environments READY {s['ready_seconds']['functions']:.1f}s ({n} functions) and "
        f"{s['ready_seconds']['environments']:.1f}s (1 function) after both services were started together; "
        f"READY at the end {s['ready_at_end']['functions']} and {s['ready_at_end']['environments']}; "
        f"round-robin p50 ratio in each fifth of the run: {_fmt(s['p50_ratio_by_block'], 2)}"
    ]
    for label, key in (("after init", "memory_after_init"), ("after serving", "memory")):
        for variant, mem in s[key].items():
            if "rss" not in mem:
                continue
            kinds = "; ".join(
                f"{kind} {v['rss_mb']:.2f}/{v['pss_mb']:.2f}/{v['uss_mb']:.2f}" for kind, v in mem["by_process"].items()
            )
            served = f", {s['one_invocations']} invokes" if variant == "one" and "one_invocations" in s else ""
            lines.append(
                f"scale: idle env ({variant}, {label}{served}, {mem['environments']} sandboxes, "
                f"{mem.get('generic_ready', 0)} of them generic spares) MB RSS/PSS/USS median "
                f"{mem['rss']['median']:.2f}/{mem['pss']['median']:.2f}/{mem['uss']['median']:.2f}, "
                f"max RSS {mem['rss']['max']:.2f}; per process (median): {kinds}"
            )
    one, many = services["one"], services["environments"]
    per_env_kb = (many["rss_mb"] - one["rss_mb"]) * 1024 / max(1, n - 1)
    per_env_fds = (many["fds"] - one["fds"]) / max(1, n - 1)
    lines.append(
        "scale: services (RSS MB, fds, threads): "
        + ", ".join(f"{name} {v['rss_mb']:.1f}, {v['fds']}, {v['threads']}" for name, v in services.items())
        + f"; each environment adds {per_env_kb:.0f} KB of RSS and {per_env_fds:.1f} fds to its service"
    )
    return lines


def _fmt(values: list[float], digits: int = 0) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"
