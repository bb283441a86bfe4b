"""Debian's chromium driven by Playwright (no browser download: `make test` installs the
Debian package), headless, with a fresh profile per session."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium(viewport: tuple[int, int] | None = None) -> Iterator[Any]:
    """A Playwright browser context on a fresh profile; closed (and the profile removed) after."""
    from playwright.sync_api import sync_playwright

    size = {"width": viewport[0], "height": viewport[1]} if viewport else None
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=size,
        )
        try:
            yield context
        finally:
            context.close()
