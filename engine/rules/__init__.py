"""Portfolio risk rules, composed per trading plan by risk profiles (`configs/risk/`).

Importing this package registers every rule module with the profile loader.
"""

from engine.rules import core  # noqa: F401

__all__: list[str] = []
