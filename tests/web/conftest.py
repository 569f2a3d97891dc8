"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, one page per test,
screenshots into test-output/web/, and no uncaught script error allowed."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.chromium import ARGS, CHROMIUM

# CI sets HPO_REQUIRE_BROWSER=1: there a missing Chromium or Playwright fails the page tests
# instead of skipping them, as HPO_REQUIRE_POSTGRES does for PostgreSQL.
REQUIRED = bool(os.environ.get("HPO_REQUIRE_BROWSER"))


def _missing(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"HPO_REQUIRE_BROWSER is set but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def _playwright() -> ModuleType:
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        _missing("Playwright is not installed (pip install playwright)")
        raise


sync_api = _playwright()
if not Path(CHROMIUM).exists():
    _missing("Debian's chromium is not installed (apt-get install chromium)")

SHOTS = ROOT / "test-output" / "web"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser page on a laptop-sized viewport that records script errors."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1366, "height": 860})
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def shoot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def web(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    page.context.close()
    assert page.errors == [], page.errors
