"""Device memory between trials: each trial's memory must be back before the next starts.

After a trial the worker collects garbage and empties PyTorch's CUDA cache, then compares the
memory still allocated on its device (less what the in-memory dataset cache holds on purpose)
with the baseline taken when the process started. What a trial leaves behind beyond a small
slack cannot be trusted to come back, so the worker then starts a fresh training process.
On the CPU there is nothing to measure; `--max-trials-per-process` recycles on any device.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from trainer import data

SLACK_BYTES = 16 * 2**20


def cuda_held() -> int:
    """Bytes allocated on the current CUDA device beyond the cached datasets."""
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated()) - data.cached_bytes("cuda")


class MemoryWatch:
    def __init__(self, device: str, probe: Callable[[], int] | None = None) -> None:
        self.probe = (
            probe if probe is not None else (cuda_held if device.startswith("cuda") else None)
        )
        self.baseline = self.probe() if self.probe is not None else 0

    def leaked(self) -> int:
        """Bytes the trials so far left on the device (0 on the CPU)."""
        if self.probe is None:
            return 0
        return max(0, self.probe() - self.baseline)

    def needs_fresh_process(self) -> bool:
        return self.leaked() > SLACK_BYTES
