"""Checkpoints and other artifacts under HPO_ARTIFACTS_DIR, addressed by server-made ids only.

An id is 32 lowercase hex characters made here (`new_id`); anything else is refused before it
comes near the file system, and every path is checked to lie inside the folder, so ids from the
outside (`../x`, `/etc/passwd`, unknown ids) can neither read nor write elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

_ID = re.compile(r"[0-9a-f]{32}")
SUFFIX = ".ckpt"


class ArtifactError(Exception):
    """An artifact could not be stored (folder not writable, disk full, too large)."""


class ArtifactStore:
    def __init__(self, root: Path, max_bytes: int = 4 * 1024**3) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    @staticmethod
    def valid_id(artifact_id: str) -> bool:
        return _ID.fullmatch(artifact_id) is not None

    def path(self, artifact_id: str) -> Path:
        """The file of `artifact_id`; ValueError for anything that is not one of our ids."""
        if not self.valid_id(artifact_id):
            raise ValueError(f"not an artifact id: {artifact_id[:80]!r}")
        root = self.root.resolve()
        path = (root / f"{artifact_id}{SUFFIX}").resolve()
        if path.parent != root:  # cannot happen for a valid id; kept as the last guard
            raise ValueError(f"not an artifact id: {artifact_id[:80]!r}")
        return path

    def write(self, artifact_id: str, chunks: Iterable[bytes]) -> int:
        """Store the bytes atomically (a reader never sees half a file); returns the size."""
        path = self.path(artifact_id)
        partial = path.with_suffix(".partial")
        size = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ArtifactError(
                            f"the artifact is larger than the limit of {self.max_bytes} bytes"
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except OSError as exc:
            raise ArtifactError(
                f"cannot store the artifact in {self.root}: {exc.strerror}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        return size

    def exists(self, artifact_id: str) -> bool:
        try:
            return self.path(artifact_id).is_file()
        except ValueError:
            return False

    def delete(self, artifact_id: str | None) -> None:
        if artifact_id is None or not self.valid_id(artifact_id):
            return
        with contextlib.suppress(OSError):
            self.path(artifact_id).unlink(missing_ok=True)
