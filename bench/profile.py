"""Where the warm path's time goes: CPU per invoke in each process, and py-spy profiles of the
service and of the function's bootstrap under a sequential warm load.

    python -m bench.profile [--seconds 10] [--invokes 3000] [--out DIR]

Needs py-spy (`.venv/bin/pip install py-spy`) for the profiles; the CPU accounting needs nothing.
Not part of `python -m bench`: sampling slows what it samples.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .clients import RawClient
from .procs import FUNCTION, TEMPLATE, floor_ready, service_ready, start_floor, start_service

_TICK = os.sysconf("SC_CLK_TCK")
_CLIENT = Path(__file__).resolve().parent.parent / "bootstrap" / "client.py"
# The bootstrap blocked reading a Runtime API answer (the long poll on /next): a leaf frame at one of
# the client's `recv` lines (the first byte of an answer is awaited in _exchange or _take_prefetched,
# the rest in _Reader).
_WAITING = tuple(
    f"(sandbox_bootstrap/client.py:{number})"
    for number, line in enumerate(_CLIENT.read_text().splitlines(), 1)
    if ".recv(" in line or "recv_into(" in line
)
_FILE = re.compile(r"\(([^()]*?):\d+\)$")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def bootstrap_pids(service_pid: int) -> list[int]:
    """The function processes (the bootstrap's interpreter) below the service."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                commands[int(entry)] = f.read()
        except OSError:
            continue

    def below_service(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == service_pid:
                return True
        return False

    return [
        pid
        for pid, cmd in commands.items()
        if b"sandbox_bootstrap.main" in cmd and b"bwrap" not in cmd.split(b"\0")[0] and below_service(pid)
    ]


def account(client: RawClient, pids: dict[str, int], invokes: int) -> dict[str, tuple[float, float]]:
    """Microseconds per invoke, as (user, system) CPU, for the client (this process) and each of
    `pids`; and the wall time as ("wall", 0)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = os.times()
    start = time.perf_counter()
    for _ in range(invokes):
        client.timed()
    wall = time.perf_counter() - start
    client_after = os.times()
    scale = 1e6 / invokes
    out = {
        "wall": (wall * scale, 0.0),
        "client": (
            (client_after.user - client_before.user) * scale,
            (client_after.system - client_before.system) * scale,
        ),
    }
    for name, pid in pids.items():
        user, system = cpu_seconds(pid)
        out[name] = ((user - before[name][0]) * scale, (system - before[name][1]) * scale)
    return out


def syscalls(client: RawClient, pids: list[int], invokes: int, out: Path) -> str:
    """System calls per invoke made by `pids` (and their threads) while `client` invokes."""
    if not shutil.which("strace"):
        return "strace is not installed"
    cmd = ["strace", "-c", "-f", "-o", str(out)]
    for pid in pids:
        cmd += ["-p", str(pid)]
    tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    for _ in range(invokes):
        client.timed()
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    counts = {}
    for line in out.read_text().splitlines():
        cells = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(cells) >= 5 and cells[0][0].isdigit() and cells[3].isdigit():
            counts[cells[-1]] = int(cells[3]) / invokes
    total = counts.pop("total", 0.0)
    shown = ", ".join(f"{name} {n:.1f}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= 0.1)
    return f"{total:.1f} ({shown})"


def summarise(raws: list[Path], top: int, drop: tuple[str, ...] = ()) -> str:
    """Top frames of py-spy `--format raw` (collapsed stacks) files: own samples by file and by
    frame, and inclusive. Samples whose leaf frame ends with one of `drop` are left out (waiting)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = dropped = 0
    lines_in = [line for raw in raws if raw.exists() for line in raw.read_text().splitlines()]
    for line in lines_in:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        if drop and frames[-1].endswith(drop):
            dropped += n
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    by_file: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        match = _FILE.search(frame)
        by_file[match[1] if match else frame] += n
    if not total:
        return f"  no samples ({dropped} dropped as waiting)"
    lines = [
        f"  {total} samples" + (f" ({dropped} more dropped as waiting)" if drop else ""),
        "  own (leaf) samples by file:",
    ]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in by_file.most_common(top)]
    lines.append("  own (leaf) samples:")
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive samples:")
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="py-spy sampling time")
    parser.add_argument("--invokes", type=int, default=3000, help="invokes per side for the CPU accounting")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--out", type=Path, help="keep the raw py-spy outputs here")
    parser.add_argument("--strace", action="store_true", help="also count system calls per invoke (strace -c)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="sandbox-runtime-profile-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    uid_base = 900000 + (os.getpid() % 400) * 250
    floor = start_floor(workdir)
    service = start_service("service", TEMPLATE, workdir, pool_size=1, uid_range=(uid_base, uid_base + 99))
    try:
        floor.ready(lambda: floor_ready(floor))
        service.ready(lambda: service_ready(service, FUNCTION, 1))
        floor_client, service_client = RawClient(floor.port, FUNCTION), RawClient(service.port, FUNCTION)
        for _ in range(300):
            floor_client.timed()
            service_client.timed()
        functions = bootstrap_pids(service.pid)
        if not functions:
            print("found no function process under the service", file=sys.stderr)
            return 1

        print(f"CPU per invoke (µs), sequential, {args.invokes} invokes each (user + system; wall: mean round trip):")
        floor_cpu = account(floor_client, {"floor": floor.pid}, args.invokes)
        pids = {"service": service.pid, **{f"function[{pid}]": pid for pid in functions}}
        service_cpu = account(service_client, pids, args.invokes)
        per_function = {pid: service_cpu.pop(f"function[{pid}]") for pid in functions}
        busiest = max(per_function, key=lambda pid: sum(per_function[pid]))
        service_cpu["function"] = per_function.pop(busiest)
        if per_function:
            # Environments started during the run (see docs/performance.md) show up here.
            service_cpu["other functions"] = tuple(sum(cpu[i] for cpu in per_function.values()) for i in (0, 1))  # type: ignore[assignment]
        for name, row in (("floor", floor_cpu), ("service", service_cpu)):
            cells = [f"wall {row.pop('wall')[0]:6.0f}"]
            cells += [f"{k} {u:4.0f} + {s:4.0f} = {u + s:4.0f}" for k, (u, s) in row.items()]
            print(f"  {name:8s} " + "   ".join(cells))
        functions = bootstrap_pids(service.pid)
        print(f"  function processes under the service: {len(functions)} (pool size 1; more were started on demand)")

        if args.strace:
            print(f"\nsystem calls per invoke (strace -c -f), {args.invokes // 3} invokes each:")
            for name, client, traced in (
                ("floor", floor_client, [floor.pid]),
                ("service", service_client, [service.pid]),
                ("functions", service_client, functions),
            ):
                print(f"  {name}: {syscalls(client, traced, args.invokes // 3, workdir / f'{name}.strace')}")

        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            print("py-spy is not installed: skipping the profiles (.venv/bin/pip install py-spy)")
            return 0
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                service_client.timed()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        # Every function process: the load moves between environments when new ones start.
        functions = bootstrap_pids(service.pid)
        targets = {"service": service.pid, **{f"function-{pid}": pid for pid in functions}}
        spies = {}
        for name, pid in targets.items():
            cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate)]
            cmd += ["--format", "raw", "--output", str(out / f"{name}.txt")]
            # --nonblocking reads without pausing the target (less distortion); py-spy cannot
            # unwind native frames that way.
            cmd.append("--native" if args.native else "--nonblocking")
            cmd += ["--gil"] if name == "service" else []
            spies[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name, proc in spies.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                print(f"py-spy on {name} failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        stop.set()
        loader.join()
        print(f"\npy-spy, service process (pid {service.pid}), {args.seconds:g}s under sequential load:")
        print("  (asyncio/runners.py Runner.run as a leaf = inside uvloop's C loop: socket syscalls, callbacks, idle)")
        print(summarise([out / "service.txt"], args.top))
        print(f"\npy-spy, {len(functions)} function process(es), merged, samples blocked reading a socket dropped:")
        print(summarise([out / f"{name}.txt" for name in targets if name != "service"], args.top, drop=_WAITING))
        floor_client.close()
        service_client.close()
    finally:
        service.stop()
        floor.stop()
        if args.out is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
