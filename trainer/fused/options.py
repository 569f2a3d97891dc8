"""`hpo worker --fuse`: how many leased trials a worker trains at once (torch-free, so the
command line reads it without importing PyTorch).

`auto` is 8 on a CPU and 32 on CUDA, where each group is further trimmed to a memory estimate
(trainer.fused.serving). On a 2-core CPU `--fuse 8` gave the MLP 1.5x to 2.5x the
configurations per hour of `--fuse 1` and `--fuse 16` about as much (docs/BENCHMARKS.md,
"Fused training", third round); 8 rather than more because a larger group holds more of a
study's trials at once and its epochs take longer, so that its members' decisions and a
stopping worker's hand-back wait on more work. Leases are fair (a fair share of each study per
worker) and leased trials that cannot share the group go back to the queue at once, so a search
whose trials seldom share a model shape (batch size or norm in its space) measured as fast
under 8 as under 1: what cannot be fused trains alone.
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
