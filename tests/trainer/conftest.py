"""Fixtures shared by the trainer's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import install_example_plugin
from trainer import plugins


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin installed into a fresh site folder on sys.path, discovered anew."""
    site = install_example_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    plugins.discover.cache_clear()
    yield site
    plugins.discover.cache_clear()
    sys.modules.pop("hpo_example_plugin", None)
