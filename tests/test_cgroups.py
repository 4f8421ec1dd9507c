"""cgroups logic on a folder laid out like cgroupfs (v2 delegation cannot be exercised on our v1 machines),
plus the real v1 hierarchy where it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.cgroups import CgroupError, Cgroups, Limits, favor_dynamic_modifications

MB = 1024 * 1024


def v2_tree(tmp_path: Path, controllers: str = "cpu memory pids") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    own = root / "system.slice" / "sandbox-runtime.service"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers)
    (own / "cgroup.controllers").write_text(controllers)
    (own / "cgroup.procs").write_text("4242\n4243\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/system.slice/sandbox-runtime.service\n")
    return root, self_cgroup


def test_v2_moves_the_service_into_a_leaf_and_delegates(tmp_path: Path) -> None:
    root, self_cgroup = v2_tree(tmp_path)
    cgroups = Cgroups.detect(root, self_cgroup)
    own = root / "system.slice" / "sandbox-runtime.service"
    assert cgroups.version == 2
    assert (own / "supervisor" / "cgroup.procs").read_text() == "4243"  # each pid written in turn
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_sandbox_group_limits_and_counters(tmp_path: Path) -> None:
    root, self_cgroup = v2_tree(tmp_path)
    group = Cgroups.detect(root, self_cgroup).create("s1", Limits(128 * MB, pids=1024, cpu_cores=0.5))
    folder = root / "system.slice" / "sandbox-runtime.service" / f"sandbox-runtime-{os.getpid()}" / "s1"
    assert (folder / "memory.max").read_text() == str(128 * MB)
    assert (folder / "memory.oom.group").read_text() == "1"
    assert (folder / "pids.max").read_text() == "1024"
    group.attach(777)
    assert (folder / "cgroup.procs").read_text() == "777"
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 2\noom_group_kill 1\n")
    (folder / "memory.peak").write_text(str(130_000_000))
    assert group.oom_kills() == 2
    assert group.memory_peak_bytes() == 130_000_000


def test_v2_without_delegated_memory_is_refused(tmp_path: Path) -> None:
    root, self_cgroup = v2_tree(tmp_path, controllers="cpu io")
    with pytest.raises(CgroupError, match="memory and pids are not delegated"):
        Cgroups.detect(root, self_cgroup)


def test_v1_groups_sit_under_the_services_own_groups(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for controller in ("memory", "pids", "cpu"):
        (root / controller / "svc").mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("4:memory:/svc\n8:pids:/\n1:cpu:/\n")
    cgroups = Cgroups.detect(root, self_cgroup)
    group = cgroups.create("s1", Limits(256 * MB, pids=64, cpu_cores=1.5))
    name = f"sandbox-runtime-{os.getpid()}"
    assert (root / "memory" / "svc" / name / "s1" / "memory.limit_in_bytes").read_text() == str(256 * MB)
    assert (root / "pids" / name / "s1" / "pids.max").read_text() == "64"
    assert (root / "cpu" / name / "s1" / "cpu.cfs_quota_us").read_text() == "150000"
    (root / "memory" / "svc" / name / "s1" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
    )
    assert group.oom_kills() == 1


def test_groups_of_dead_services_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for controller in ("memory", "pids", "cpu"):
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
        (root / controller / "sandbox-runtime-999999999" / "left-behind").mkdir(parents=True)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("4:memory:/\n8:pids:/\n1:cpu:/\n")
    Cgroups.detect(root, self_cgroup)
    for controller in ("memory", "pids", "cpu"):
        assert not (root / controller / "sandbox-runtime-999999999").exists()


def test_favordynmods_is_left_alone_when_already_set(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nsdelegate,favordynmods 0 0\n")
    assert favor_dynamic_modifications(mounts) is None
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert favor_dynamic_modifications(mounts) is None  # no cgroup2 hierarchy at all


@pytest.mark.skipif(not Path("/sys/fs/cgroup/memory/cgroup.procs").exists() or os.geteuid() != 0, reason="v1 root")
def test_real_v1_group_limits_a_process() -> None:
    cgroups = Cgroups.detect()
    try:
        group = cgroups.create("probe", Limits(64 * MB, pids=8))
        assert group.memory_peak_bytes() == 0
        assert group.oom_kills() == 0
        group.remove()
    finally:
        cgroups.close()
