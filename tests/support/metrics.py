"""Reading a run's Prometheus endpoint in tests (loopback only)."""

from __future__ import annotations

import urllib.request


def scrape(port: int) -> dict[str, float]:
    """The `ats_*` samples of the /metrics page on 127.0.0.1:`port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("ats_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
