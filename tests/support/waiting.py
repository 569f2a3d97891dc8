"""Waiting in tests: poll until something a user would see holds, or fail naming it."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["wait_for"]


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
