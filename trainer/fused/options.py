"""`hpo worker --fuse`: how many leased trials a worker trains at once (torch-free, so the
command line reads it without importing PyTorch).

`auto` is 1 on a CPU and 32 on CUDA, where each group is further trimmed to a memory estimate
(trainer.fused.serving). On a CPU fusion is asked for (`--fuse 8`: past 8 the gain flattens,
bench/fused_throughput.py). It became 1 there when a fusing worker took every trial of a study
from the other workers; leases are fair now (a fair share per study, the trials that do not fit
the group given back at once) and `--fuse 8` measured 1.9x for an MLP and 1.6x for a CNN on a
2-core box, but switching every CPU worker's default waits for more than those few runs on a
loaded machine (docs/BENCHMARKS.md, "Fused training").
"""

from __future__ import annotations

CPU_GROUP = 1
CUDA_GROUP = 32
MAX_GROUP = 64  # the most trials one lease request may ask for


def parse_fuse(value: str) -> int | None:
    """`--fuse`: a group size from 1 to 64, or "auto" (None). Raises ValueError naming the flag."""
    if value == "auto":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_GROUP:
        raise ValueError(f"--fuse must be 'auto' or a number from 1 to {MAX_GROUP}, got {value!r}")
    return int(value)


def group_size(device: str, requested: int | None) -> int:
    """The most trials a worker on `device` leases and fuses at once."""
    if requested is not None:
        return requested
    return CUDA_GROUP if device.startswith("cuda") else CPU_GROUP
