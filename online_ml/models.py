"""River regressors by name, so configs can choose a learner without importing River.

Every factory takes a seed, so two models made alike learn alike (the contract suite in
`tests/online_ml/test_contract.py` checks it for every registered name). Short names serve the
command line: `lr`, `htr`, `arf`.

>>> model = make_regressor("linear")
>>> for step in range(200):
...     x = {"order_flow": step % 7 - 3.0}
...     model.learn_one(x, 2.0 * x["order_flow"] + 1.0)
>>> round(model.predict_one({"order_flow": 1.0}), 1)
3.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import forest, linear_model, optim, preprocessing, tree

Factory = Callable[[int], Any]

REGRESSORS: dict[str, Factory] = {}
ALIASES: dict[str, str] = {"lr": "linear", "htr": "hoeffding_tree", "arf": "adaptive_forest"}


def register_regressor(name: str) -> Callable[[Factory], Factory]:
    """Add a factory `seed -> regressor` under `name` (a new learner is one function)."""
    def register(factory: Factory) -> Factory:
        if name in REGRESSORS or name in ALIASES:
            raise ValueError(f"regressor {name!r} is already registered")
        REGRESSORS[name] = factory
        return factory

    return register


@register_regressor("linear")
def _linear(seed: int) -> Any:
    """Scaled linear regression: ~12 us a sample, fine per bar or per signal. The target is
    standardised too (rewards are ~1e-3, where plain SGD steps would swamp the weights), and
    gradients are clipped: early, the scaler's variance is tiny and one outlier would blow the
    weights up."""
    scaled = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(0.01), intercept_lr=0.01, clip_gradient=1.0)
    return preprocessing.TargetStandardScaler(regressor=scaled)  # type: ignore[arg-type]


@register_regressor("hoeffding_tree")
def _hoeffding_tree(seed: int) -> Any:
    """Hoeffding tree: ~140 us a sample; use per signal. Deterministic without a seed."""
    return preprocessing.StandardScaler() | tree.HoeffdingTreeRegressor(grace_period=50)


@register_regressor("adaptive_forest")
def _adaptive_forest(seed: int) -> Any:
    """Adaptive random forest of 10 trees with drift detection: 1 to 3.5 ms a sample, per
    signal only (DESIGN.md)."""
    return preprocessing.StandardScaler() | forest.ARFRegressor(
        n_models=10, grace_period=50, seed=seed)


def resolve_name(name: str) -> str:
    """The registered name of `name` or its alias; ValueError naming the known ones."""
    resolved = ALIASES.get(name, name)
    if resolved not in REGRESSORS:
        known = ", ".join([*REGRESSORS, *ALIASES])
        raise ValueError(f"unknown regressor {name!r}; known: {known}")
    return resolved


def make_regressor(name: str, seed: int = 7) -> Any:
    """A fresh online regressor; raises ValueError naming the known names."""
    return REGRESSORS[resolve_name(name)](seed)
