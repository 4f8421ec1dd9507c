"""`python -m bench` (scripts/bench): measure the service against floors measured in the same run.

python -m bench                 # full run (80-100 s; about 70 s without a Docker engine)
python -m bench --quick         # short run (about 25 s)
python -m bench --only cold     # one part (repeatable: --only warm --only throughput --only docker --only sessions
                                #   --only scale)
python -m bench --json out.json # also write every number as JSON
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import backends, cold, report, scale, sessions, throughput, warm
from .clients import InvokeFailed
from .procs import FUNCTION, TEMPLATE, Server, floor_ready, health, service_ready, start_floor, start_service
from .procs import write_cold_template as _write_cold_template

PARTS = ("warm", "throughput", "cold", "docker", "sessions", "scale")
SESSION_POOL = 2  # warm session sandboxes of the sessions part

FULL: dict[str, Any] = {
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
    # docker against bwrap: cold starts per backend (pairs), then sequential warm invokes per backend
    "docker_cold_samples": 30,
    "docker_cold_warmup": 2,
    "docker_warm_warmup": 100,
    "docker_warm_samples": 1500,
    # sessions: creations per kind (warm pool, no pool, bare sandbox), then round trips against warm invokes
    "sessions_samples": 30,
    "sessions_warmup": 2,
    "sessions_exec_samples": 300,
    "sessions_exec_warmup": 20,
    # scale: 200 warm environments against 1 (rounds of one invoke per target), after all are ready
    "scale_environments": scale.ENVIRONMENTS,
    "scale_warmup": 100,
    "scale_samples": 2000,
}
QUICK: dict[str, Any] = {
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
    "docker_cold_samples": 6,
    "docker_cold_warmup": 1,
    "docker_warm_warmup": 30,
    "docker_warm_samples": 300,
    "sessions_samples": 8,
    "sessions_warmup": 1,
    "sessions_exec_samples": 60,
    "sessions_exec_warmup": 5,
    "scale_warmup": 30,
    "scale_samples": 400,
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
    uid_base = 900000 + (os.getpid() % 400) * 500
    servers: list[Server] = []
    results: dict[str, Any] = {"params": params, "machine": info}
    try:
        floor = service = cold_service = nothing_service = docker_service = sessions_service = None
        if parts & {"warm", "throughput"}:
            floor = start_floor(workdir)
            pool = params["threads"]  # one warm environment per client thread
            service = start_service("service", TEMPLATE, workdir, pool_size=pool, uid_range=(uid_base, uid_base + 99))
            servers += [floor, service]
        if "cold" in parts:
            names = _write_cold_template(workdir / "cold.yaml", params["cold_samples"] + params["cold_warmup"])
            cold_service = start_service(
                "cold-service", workdir / "cold.yaml", workdir, pool_size=0, uid_range=(uid_base + 100, uid_base + 149)
            )
            # The same without pre-started generic sandboxes: every cold start from nothing.
            nothing_service = start_service(
                "cold-service-from-nothing",
                workdir / "cold.yaml",
                workdir,
                pool_size=0,
                uid_range=(uid_base + 150, uid_base + 199),
                env={"SANDBOX_GENERIC_POOL_SIZE": "0"},
            )
            servers += [cold_service, nothing_service]
        if "sessions" in parts:
            sessions_service = start_service(
                "sessions-service",
                TEMPLATE,
                workdir,
                pool_size=1,
                uid_range=(uid_base + 216, uid_base + 249),
                env={"SANDBOX_SESSION_POOL_SIZE": str(SESSION_POOL)},
            )
            servers.append(sessions_service)
        if "docker" in parts:
            if problem := backends.engine_problem():
                results["docker_skipped"] = problem
                _log(f"skipping docker against bwrap: {problem}")
            else:
                pairs = params["docker_cold_samples"] + params["docker_cold_warmup"]
                docker_names = backends.write_backends_template(workdir / "docker.yaml", pairs)
                docker_service = start_service(
                    "docker-service",
                    workdir / "docker.yaml",
                    workdir,
                    pool_size=0,
                    uid_range=(uid_base + 250, uid_base + 499),
                    # Both backends start a sandbox for each cold start (Docker's holders aside): bwrap's
                    # generic sandboxes would compare a start with an assignment.
                    env={"SANDBOX_GENERIC_POOL_SIZE": "0"},
                )
                servers.append(docker_service)
        if floor is not None and service is not None:
            floor.ready(lambda: floor_ready(floor))
            service.ready(lambda: service_ready(service, FUNCTION, params["threads"]))
        if cold_service is not None and nothing_service is not None:
            cold_service.ready(lambda: service_ready(cold_service))
            nothing_service.ready(lambda: service_ready(nothing_service))
        if (started_sessions := sessions_service) is not None:
            started_sessions.ready(lambda: service_ready(started_sessions, FUNCTION, 1))
        if (started_docker := docker_service) is not None:
            try:  # the Docker rows are optional: any failure to run them skips them, with the reason
                started_docker.ready(lambda: service_ready(started_docker), timeout=120)  # may build the base image
                problem = backends.unavailable(health(started_docker))
            except (RuntimeError, OSError) as exc:
                problem = f"the service for docker against bwrap did not start: {exc}"
            if problem:
                results["docker_skipped"] = problem
                _log(f"skipping docker against bwrap: {problem}")
                docker_service = None
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
        sandbox_floor = cold.BwrapFloor(workdir, uid=uid_base + 200) if cold_service or sessions_service else None
        try:
            if cold_service is not None and nothing_service is not None and sandbox_floor is not None:
                _log(
                    f"cold start: {params['cold_samples']} cold invokes with and without generic sandboxes, "
                    "alternating with bwrap + python -c pass"
                )
                results["cold"] = cold.measure(
                    cold_service.port, nothing_service.port, names, sandbox_floor, warmup=params["cold_warmup"]
                )
            if sessions_service is not None and sandbox_floor is not None:
                _log(
                    f"sessions: {params['sessions_samples']} creations each with and without the warm pool and of a "
                    f"bare sandbox, then {params['sessions_exec_samples']} execute_code and execute round trips "
                    "each against warm invokes"
                )
                results["sessions"] = sessions.measure(
                    sessions_service.port,
                    sandbox_floor,
                    pool_size=SESSION_POOL,
                    samples=params["sessions_samples"],
                    warmup=params["sessions_warmup"],
                    exec_samples=params["sessions_exec_samples"],
                    exec_warmup=params["sessions_exec_warmup"],
                )
        finally:
            if sandbox_floor is not None:
                sandbox_floor.close()
        if docker_service is not None:
            n = params["docker_cold_samples"]
            try:
                _log(f"docker against bwrap: {n} cold invokes each, alternating")
                results["docker_cold"] = backends.measure_cold(
                    docker_service.port, docker_names, warmup=params["docker_cold_warmup"]
                )
                n = params["docker_warm_samples"]
                _log(f"docker against bwrap: warm latency, http.client: {n} invokes each, alternating")
                results["docker_warm"] = backends.measure_warm(
                    docker_service.port, warmup=params["docker_warm_warmup"], samples=n
                )
                functions = health(docker_service)["pools"]["functions"]
                results["docker_warm"]["cold_starts"] = {
                    backend: functions[backends.warm_function(backend)]["cold_starts"] for backend in backends.BACKENDS
                }
            except (InvokeFailed, OSError, http.client.HTTPException) as exc:
                results.pop("docker_cold", None)
                results.pop("docker_warm", None)
                results["docker_skipped"] = f"an invoke failed ({type(exc).__name__}: {exc}); service log:\n" + (
                    docker_service.log_tail(10)
                )
                _log(f"docker against bwrap stopped: {results['docker_skipped']}")
        if "scale" in parts:  # last: its 400 sandboxes would weigh on every other part
            # Uids of its own, above the other parts' blocks (900000 + 400 x 500) and the tests' (300000-799999).
            scale_uids = 1100000 + (os.getpid() % 400) * 600
            results["scale"] = scale.run(workdir, scale_uids, params, _log)
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
    if table_rows:
        print("ratio = times worse than the floor measured in this run (latency: service/floor; rate: floor/service)\n")
        print(report.table(table_rows))
    if docker_rows := report.docker_rows(results):
        results["docker_table"] = docker_rows
        print("\nthe Docker backend against bwrap, the same function in one service (ratio = docker/bwrap):\n")
        print(report.table(docker_rows, columns=("docker", "bwrap")))
    elif skipped := results.get("docker_skipped"):
        print(f"\nthe Docker backend against bwrap: skipped, {skipped}")
    if session_rows := report.session_rows(results):
        results["sessions_table"] = session_rows
        print("\nagent sessions against baselines of the same run (ratio = session/baseline):\n")
        print(report.table(session_rows, columns=("session", "baseline")))
    if scale_rows := report.scale_rows(results):
        results["scale_table"] = scale_rows
        print(
            f"\n{results['scale']['count']} warm environments against 1 (ratio = many/one; memory: against the "
            "budget of an idle environment, or the 1-environment service):\n"
        )
        print(report.table(scale_rows, columns=("many", "one")))
    if extra := report.breakdown(results):
        print("\n" + extra)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
