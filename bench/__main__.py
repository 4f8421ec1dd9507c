"""`python -m bench` (scripts/bench): measure the service against floors measured in the same run.

python -m bench                 # full run (about 70 s)
python -m bench --quick         # short run (about 20 s)
python -m bench --only cold     # one part (repeatable: --only warm --only throughput)
python -m bench --json out.json # also write every number as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cold, report, throughput, warm
from .procs import FUNCTION, TEMPLATE, Server, floor_ready, health, service_ready, start_floor, start_service
from .procs import write_cold_template as _write_cold_template

PARTS = ("warm", "throughput", "cold")

FULL = {
    "warm_warmup": 300,
    "warm_samples": 4000,
    "boto3_warmup": 100,
    "boto3_samples": 1500,
    "threads": 8,
    "tp_rounds": 3,
    "tp_warmup": 0.5,
    "tp_duration": 4.0,
    "boto3_tp_rounds": 2,
    "boto3_tp_duration": 3.0,
    "cold_samples": 40,
    "cold_warmup": 2,
}
QUICK = {
    **FULL,
    "warm_warmup": 100,
    "warm_samples": 600,
    "boto3_warmup": 30,
    "boto3_samples": 200,
    "tp_rounds": 1,
    "tp_warmup": 0.3,
    "tp_duration": 1.5,
    "boto3_tp_rounds": 1,
    "boto3_tp_duration": 1.0,
    "cold_samples": 8,
    "cold_warmup": 1,
}


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer samples, shorter loads)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result as JSON to PATH")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable; default: all)")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    parts = set(args.only or PARTS)
    started = time.monotonic()
    info = report.machine()
    _log(
        f"{'quick' if args.quick else 'full'} run of {', '.join(p for p in PARTS if p in parts)} on "
        f"{info['nproc']} CPUs, kernel {info['kernel']}, load {info['loadavg'][0]:.2f}"
    )

    workdir = Path(tempfile.mkdtemp(prefix="sandbox-runtime-bench-"))
    os.chmod(workdir, 0o711)  # the floor sandbox's uid must traverse it to reach its staged code
    # Sandbox uids of our own, apart from the tests' and the default range.
    uid_base = 900000 + (os.getpid() % 400) * 250
    servers: list[Server] = []
    results: dict[str, Any] = {"params": params, "machine": info}
    try:
        floor = service = cold_service = None
        if parts & {"warm", "throughput"}:
            floor = start_floor(workdir)
            pool = params["threads"]  # one warm environment per client thread
            service = start_service("service", TEMPLATE, workdir, pool_size=pool, uid_range=(uid_base, uid_base + 99))
            servers += [floor, service]
        if "cold" in parts:
            names = _write_cold_template(workdir / "cold.yaml", params["cold_samples"] + params["cold_warmup"])
            cold_service = start_service(
                "cold-service", workdir / "cold.yaml", workdir, pool_size=0, uid_range=(uid_base + 100, uid_base + 199)
            )
            servers.append(cold_service)
        if floor is not None and service is not None:
            floor.ready(lambda: floor_ready(floor))
            service.ready(lambda: service_ready(service, FUNCTION, params["threads"]))
        if cold_service is not None:
            cold_service.ready(lambda: service_ready(cold_service))
        _log(f"servers ready ({time.monotonic() - started:.1f}s)")

        if "warm" in parts and floor and service:
            n = params["warm_samples"]
            _log(f"warm latency, http.client: {n} invokes each, alternating")
            results["warm_raw"] = warm.measure_raw(floor.port, service.port, warmup=params["warm_warmup"], samples=n)
            n = params["boto3_samples"]
            _log(f"warm latency, boto3 invoke: {n} invokes each, alternating")
            results["warm_boto3"] = warm.measure_boto3(floor.url, service.url, warmup=params["boto3_warmup"], samples=n)
        if "throughput" in parts and floor and service:
            threads = params["threads"]
            _log(
                f"throughput, http.client: {threads} threads, {params['tp_rounds']} rounds of "
                f"{params['tp_duration']:g}s each"
            )
            results["throughput_raw"] = throughput.measure_raw(
                floor.port,
                service.port,
                threads=threads,
                rounds=params["tp_rounds"],
                warmup=params["tp_warmup"],
                duration=params["tp_duration"],
            )
            _log(
                f"throughput, boto3: {threads} threads, {params['boto3_tp_rounds']} rounds of "
                f"{params['boto3_tp_duration']:g}s each"
            )
            results["throughput_boto3"] = throughput.measure_boto3(
                floor.url,
                service.url,
                threads=threads,
                rounds=params["boto3_tp_rounds"],
                warmup=params["tp_warmup"],
                duration=params["boto3_tp_duration"],
            )
        if cold_service is not None:
            _log(f"cold start: {params['cold_samples']} cold invokes, alternating with bwrap + python -c pass")
            sandbox_floor = cold.BwrapFloor(workdir, uid=uid_base + 200)
            try:
                results["cold"] = cold.measure(cold_service.port, names, sandbox_floor, warmup=params["cold_warmup"])
            finally:
                sandbox_floor.close()
        if service is not None:
            pool = health(service)["pools"]["functions"][FUNCTION]
            results["warm_service_pool"] = {
                "prestarted": params["threads"],
                "cold_starts": pool["cold_starts"],
                "environments": sum(pool["environments"].values()),
            }
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - started, 1)
    table_rows = report.rows(results)
    results["table"] = table_rows
    m = results["machine"]
    print(
        f"\nsandbox-runtime benchmark, {m['date']}, code {m['code']}:\n"
        f"{m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"Python {m['python']}, load {m['loadavg'][0]:.2f} -> {m['loadavg_end'][0]:.2f}, "
        f"{results['seconds']:.0f}s{' (--quick)' if args.quick else ''}"
    )
    print("ratio = times worse than the floor measured in this run (latency: service/floor; rate: floor/service)\n")
    print(report.table(table_rows))
    if extra := report.breakdown(results):
        print("\n" + extra)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
