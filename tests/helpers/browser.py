"""Debian's Chromium for the browser tests: where it is and how it is started here.

The machine's network is closed: without the background-networking switches Chromium
keeps trying to reach Google's services at every start. Playwright drives the same
binary (``executable_path``); nothing downloads a browser.
"""

from __future__ import annotations

import shutil

__all__ = ["CHROMIUM", "CHROMIUM_ARGS"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Switches for a headless run as root on a machine without a network or a GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
