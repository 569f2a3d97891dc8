"""`hpo worker --fuse`: how many leased trials a worker trains at once (torch-free, so the
command line reads it without importing PyTorch).

`auto` is 8 on a CPU (bench/fused_throughput.py: past 8 the gain flattens and convolutional
models' activations leave the cache) and 32 on CUDA, where each group is further trimmed to a
memory estimate (trainer.fused.serving).
"""

from __future__ import annotations

CPU_GROUP = 8
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
