"""Headless Chromium for the HTML report tests: render a page, return its DOM and log."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium_or_skip() -> str:
    """Path of a Chromium-like browser, or skip the test (CI installs one in .ci/run)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (CI installs it in .ci/run)")


def render(page: Path, profile: Path) -> tuple[str, dict[str, str], list[str]]:
    """Render ``page`` headless (scripts run for 2 s of virtual time); return the DOM, the
    ``data-*`` attributes of its body and the console lines Chromium logged."""
    cmd = [
        chromium_or_skip(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=2000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body is not None, proc.stdout[:500]
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    # Chromium logs every console message (errors included) as INFO:CONSOLE.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, attrs, console
