"""How many physical CPU cores this process may use: the default slot count of `hpo worker`.

Three things limit it, and the smallest wins:
- the CPU affinity mask (`taskset`, Slurm's and Kubernetes' cpusets): `os.sched_getaffinity`;
- hyper-threads: two logical CPUs of one physical core count once, since a training process
  with one torch thread keeps a core's arithmetic units busy on its own (Linux's
  /sys/devices/system/cpu/cpuN/topology says which logical CPUs share a core);
- a cgroup CPU quota (`docker run --cpus 2`, a Kubernetes CPU limit): cgroup v2's `cpu.max`
  or v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`, on this process's cgroup or any above it,
  rounded down (1.5 CPUs give one slot, which then runs at full speed).

Where a source cannot be read (another OS, a masked /sys), it limits nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

SYS = Path("/sys")
PROC = Path("/proc")


def usable_cores(sys_root: Path = SYS, proc_root: Path = PROC) -> int:
    """The physical cores this process may use, at least 1 (see the module's docstring)."""
    cpus = allowed_cpus()
    cores = physical_cores(cpus, sys_root)
    quota = cgroup_cpu_limit(sys_root, proc_root)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(cpus: Iterable[int], sys_root: Path = SYS) -> int:
    """How many distinct physical cores the logical CPUs `cpus` belong to. A CPU whose topology
    cannot be read counts as a core of its own."""
    cores: set[tuple[str, str] | int] = set()
    for cpu in cpus:
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores.add(cpu)
            continue
        cores.add((package, core))
    return len(cores)


def cgroup_cpu_limit(sys_root: Path = SYS, proc_root: Path = PROC) -> float | None:
    """The CPUs (quota / period) the cgroups of this process allow, the smallest over its cgroup
    and those above it; None when no quota is set or none can be read."""
    try:
        lines = (proc_root / "self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one unified hierarchy
            limits += _levels(sys_root / "fs/cgroup", path, _v2_limit)
        elif "cpu" in controllers.split(","):
            mount = _v1_mount(sys_root / "fs/cgroup", controllers)
            if mount is not None:
                limits += _levels(mount, path, _v1_limit)
    return min(limits) if limits else None


def _levels(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """`read` at the cgroup `path` and every level above it that this mount shows. A container
    sees its own cgroup at the mount's root while /proc names the host's path for it; levels
    that do not exist are skipped."""
    found: list[float] = []
    here = PurePosixPath(path)
    for level in [here, *here.parents]:
        folder = mount / str(level).lstrip("/")
        if folder.is_dir():
            limit = read(folder)
            if limit is not None:
                found.append(limit)
    return found


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return _ratio(quota, period)


def _v1_mount(root: Path, controllers: str) -> Path | None:
    for name in (controllers, "cpu,cpuacct", "cpu"):
        if (root / name).is_dir():
            return root / name
    return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 says -1 for no quota
