"""River regressors by name, so configs can choose a learner without importing River.

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

from river import linear_model, optim, preprocessing, tree

REGRESSORS: dict[str, Callable[[], Any]] = {
    # Scaled linear regression: ~12 us a sample here, fine per bar or per signal.
    "linear": lambda: preprocessing.StandardScaler()
    | linear_model.LinearRegression(optimizer=optim.SGD(0.05), intercept_lr=0.05),
    # Hoeffding tree: ~140 us a sample; use per signal.
    "hoeffding_tree": lambda: preprocessing.StandardScaler()
    | tree.HoeffdingTreeRegressor(grace_period=50),
}


def make_regressor(name: str) -> Any:
    """A fresh online regressor; raises ValueError naming the known names."""
    try:
        factory = REGRESSORS[name]
    except KeyError:
        raise ValueError(f"unknown regressor {name!r}; known: {', '.join(REGRESSORS)}") from None
    return factory()
