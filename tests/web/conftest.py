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
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
LAPTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser page (laptop-sized unless told) that records script errors."""

    def __init__(self, browser: Any, viewport: dict[str, int] = LAPTOP) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def axe(self) -> list[str]:
        """Serious and critical accessibility violations axe-core finds on the page now, one
        line each (rule, impact, the first offending elements)."""
        if not self.page.evaluate("typeof window.axe === 'object'"):
            self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter((v) => ['serious', 'critical'].includes(v.impact))"
            ".map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3)"
            ".map((n) => n.target.join(' ')).join(', ')}`)"
        )
        return list(found)

    def horizontal_overflow(self) -> list[str]:
        """What makes the page wider than its viewport (empty when it does not scroll
        sideways): the outermost elements reaching past the right edge."""
        return list(
            self.page.evaluate(
                """() => {
                const width = document.documentElement.clientWidth;
                if (document.documentElement.scrollWidth <= width) return [];
                const wide = [...document.querySelectorAll('body *')].filter((el) => {
                    const r = el.getBoundingClientRect();
                    return r.width > 0 && r.right > width + 1 && !el.closest('.scroll-x');
                });
                const outer = wide.filter((el) => !wide.includes(el.parentElement));
                return [`scrollWidth ${document.documentElement.scrollWidth} > ${width}`,
                        ...outer.slice(0, 8).map((el) =>
                            `${el.tagName.toLowerCase()}#${el.id}.${el.className}`
                            + ` right=${Math.round(el.getBoundingClientRect().right)}`)];
            }"""
            )
        )

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


@pytest.fixture
def phone(browser: Any) -> Iterator[Page]:
    """A page on a phone's viewport (390 x 844 CSS pixels)."""
    page = Page(browser, PHONE)
    yield page
    page.context.close()
    assert page.errors == [], page.errors
