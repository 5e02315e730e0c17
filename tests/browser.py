"""Headless Chromium for the tests of pages: where it is, and a skip when it is not.

The tests drive Debian's Chromium through Playwright (which brings no browser
of its own here). A user's plain run skips them with the reason shown; under
CI (``services_required``) a missing browser fails the run instead.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import services_required

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = (
    "Chromium is not installed (apt-get install chromium)"
    if CHROMIUM is None
    else "Playwright is not installed (pip install playwright)"
    if importlib.util.find_spec("playwright") is None
    else None
)
if MISSING and services_required():
    raise RuntimeError(f"CI requires the browser tests, but {MISSING}")

needs_browser = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

# Without the background-networking flags Chromium keeps trying hosts this
# machine cannot reach.
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh browser context in headless Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # the test makes between page steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(20_000)
            yield context
        finally:
            browser.close()
