"""How many physical cores `hpo worker` counts (its default slot count), on fake /sys and /proc
trees: hyper-threads, cgroup v1 and v2 quotas, a container's view of its cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import cores


def _topology(sys_root: Path, cpu: int, package: int, core: int) -> None:
    folder = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
    folder.mkdir(parents=True)
    (folder / "physical_package_id").write_text(f"{package}\n")
    (folder / "core_id").write_text(f"{core}\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_hyper_threads_of_one_core_count_once(tmp_path: Path) -> None:
    # Two sockets of two cores, each core with two hyper-threads (CPUs n and n + 4).
    for cpu in range(8):
        _topology(tmp_path, cpu, package=(cpu % 4) // 2, core=cpu % 2)
    assert cores.physical_cores(range(8), tmp_path) == 4
    assert cores.physical_cores({0, 4}, tmp_path) == 1  # one core's two threads
    assert cores.physical_cores({0, 1, 2}, tmp_path) == 3
    # Core ids repeat across sockets: socket 1's core 0 is another core than socket 0's.
    assert cores.physical_cores({0, 2}, tmp_path) == 2


def test_a_cpu_without_topology_counts_as_a_core(tmp_path: Path) -> None:
    _topology(tmp_path, 0, 0, 0)
    assert cores.physical_cores({0, 1, 2}, tmp_path) == 3


def test_no_quota_or_no_cgroup_file_limits_nothing(tmp_path: Path) -> None:
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") is None
    _write(tmp_path / "proc/self/cgroup", "0::/\n")
    _write(tmp_path / "fs/cgroup/cpu.max", "max 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") is None


def test_a_cgroup_v2_quota_above_this_cgroup_limits_it(tmp_path: Path) -> None:
    _write(tmp_path / "proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
    _write(tmp_path / "fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n")
    _write(tmp_path / "fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n")
    _write(tmp_path / "fs/cgroup/kubepods/cpu.max", "800000 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") == 2.5


def test_a_container_sees_its_cgroup_v2_at_the_mount_root(tmp_path: Path) -> None:
    # /proc names the host's path; the container's namespace mounts its own cgroup at the root.
    _write(tmp_path / "proc/self/cgroup", "0::/system.slice/docker-abc.scope\n")
    _write(tmp_path / "fs/cgroup/cpu.max", "200000 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") == 2.0


def test_a_cgroup_v1_quota(tmp_path: Path) -> None:
    _write(tmp_path / "proc/self/cgroup", "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    _write(tmp_path / "fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n")
    _write(tmp_path / "fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") == 1.5
    _write(tmp_path / "fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")  # no quota
    assert cores.cgroup_cpu_limit(tmp_path, tmp_path / "proc") is None


def test_a_two_cpu_container_on_a_64_core_host_gets_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cpu in range(64):
        _topology(tmp_path, cpu, 0, cpu)
    _write(tmp_path / "proc/self/cgroup", "0::/\n")
    _write(tmp_path / "fs/cgroup/cpu.max", "200000 100000\n")
    monkeypatch.setattr(cores, "allowed_cpus", lambda: set(range(64)))
    assert cores.usable_cores(tmp_path, tmp_path / "proc") == 2
    # 1.5 CPUs round down: one slot at full speed rather than two throttled.
    _write(tmp_path / "fs/cgroup/cpu.max", "150000 100000\n")
    assert cores.usable_cores(tmp_path, tmp_path / "proc") == 1
    # Below one CPU there is still one slot.
    _write(tmp_path / "fs/cgroup/cpu.max", "50000 100000\n")
    assert cores.usable_cores(tmp_path, tmp_path / "proc") == 1


def test_the_affinity_mask_limits_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cpu in range(16):
        _topology(tmp_path, cpu, 0, cpu % 8)  # 8 cores with 2 threads each
    monkeypatch.setattr(cores, "allowed_cpus", lambda: {0, 1, 2, 8, 9})  # taskset -c 0-2,8,9
    assert cores.usable_cores(tmp_path, tmp_path / "proc") == 3


def test_this_machine_has_at_least_one_usable_core() -> None:
    assert 1 <= cores.usable_cores() <= len(cores.allowed_cpus())
