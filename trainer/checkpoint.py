"""A trial's checkpoint: everything needed to go on after an epoch as if never interrupted.

Saved: the model's and optimizer's state dicts (batch-norm running statistics included) and the
random generators that training draws from (dropout). The schedule is a pure function of the
step and each epoch's shuffle is seeded by (seed, epoch), so they need no state. The format is
`torch.save`'s, read back with `torch.load(weights_only=True)`: tensors, numbers and strings
only, so a checkpoint can never run code when it is loaded.
"""

from __future__ import annotations

import io
import pickle
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from trainer.params import TrainingError

if TYPE_CHECKING:
    from trainer.train import Run

FORMAT = 1


@dataclass
class Cadence:
    """Which epochs of a trial end with a checkpoint (the `checkpoint_every` and
    `checkpoint_seconds` params). A checkpoint costs a snapshot, its serialization, an upload
    and the server's write: with epochs of a fraction of a second, one per epoch was a third
    of a fused run (docs/BENCHMARKS.md, "Checkpoints on a time cadence").

    `unsaved` counts the training seconds (epoch_seconds) since the last checkpoint, or since
    the run started or resumed: a resumed trial counts from its checkpoint. The unfused loop and
    every member of a fused group keep their own, so a trial decides alike alone or fused.
    `leaving` is the worker's shutdown (SIGTERM): once set, every epoch that ends takes one, as
    the worker hands the trial back after it (trainer.worker samples it before reporting)."""

    every: int = 1
    seconds: float = 0.0
    leaving: threading.Event | None = None
    unsaved: float = 0.0

    def due(self, epoch: int, stop: int, epochs: int, seconds: float) -> bool:
        """Whether the state after `epoch`, which trained for `seconds`, is checkpointed, in a
        run that trains up to `stop` of the schedule's `epochs`. Never after the last epoch:
        nothing is left to resume. Always at `stop` before the last (a rung's end: the pause
        resumes from exactly there) and once the worker is leaving. Otherwise every
        `every`-th epoch once `self.seconds` of training have passed (0: every one)."""
        self.unsaved += seconds
        if epoch >= epochs:
            return False
        selected = epoch % self.every == 0 and self.unsaved >= self.seconds
        leaving = self.leaving is not None and self.leaving.is_set()
        if not (selected or epoch == stop or leaving):
            return False
        self.unsaved = 0.0
        return True


def snapshot(run: Run, epoch: int) -> bytes:
    """The state after `epoch` as bytes."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "train_seconds": run.train_seconds,
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def restore(run: Run, blob: bytes) -> int:
    """Load a snapshot into `run` (built from the same config); returns its epoch.

    Raises TrainingError when the bytes are not a checkpoint of this model."""
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("not a checkpoint of this trainer")
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError) as exc:
        raise TrainingError(f"cannot resume from the checkpoint: {exc}") from exc
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    run.train_seconds = float(state.get("train_seconds", 0.0))  # older checkpoints: none
    return int(state["epoch"])
