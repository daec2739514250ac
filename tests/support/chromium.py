"""Headless Chromium (Debian's `chromium` package, installed by `make test`) for report tests:
a screenshot of a local file and what its console printed. No network: the flags turn off
Chromium's own background connections."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0")


def screenshot(page: Path, out: Path, profile: Path, size: str = "1000,3200") -> list[str]:
    """Render `page` into the PNG `out`; returns the console lines Chromium logged."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("Debian's chromium package is not installed; `make test` installs it")
    completed = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
         f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {completed.returncode}): "
                           f"{completed.stderr[-2000:]}")
    return [line for line in completed.stderr.splitlines() if ":CONSOLE" in line]
