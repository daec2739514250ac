from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import (
    CONFIG_DIR,
    ConfigError,
    EmaCrossConfig,
    MomentumBreakoutConfig,
    load_config,
    parse_config,
)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.name


def test_defaults_are_the_specified_strategy_and_limits() -> None:
    config = parse_config({})
    assert isinstance(config.strategy, MomentumBreakoutConfig)
    assert config.strategy.timeframe == "15m" and config.strategy.trend_timeframe == "4h"
    assert config.strategy.max_holding_ns == 24 * 3600 * 10**9
    risk = config.risk
    assert (risk.risk_per_trade, risk.max_leverage, risk.max_open_positions) == (0.01, 3.0, 5)
    assert (risk.max_portfolio_heat, risk.daily_loss_limit) == (0.05, 0.03)


def test_errors_name_file_key_and_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("strategy:\n  kind: ema_cross\n  timeframe: 2m\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "bad.yaml" in message and "strategy.ema_cross.timeframe" in message
    assert "allowed: 1s, 1m, 5m, 15m, 1h, 4h" in message


def test_unknown_keys_and_strategies_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"risk\.max_levrage"):
        parse_config({"risk": {"max_levrage": 5}})
    with pytest.raises(ConfigError, match="strategy"):
        parse_config({"strategy": {"kind": "martingale"}})


def test_configs_are_frozen() -> None:
    config = EmaCrossConfig()
    with pytest.raises(Exception, match="frozen"):
        config.fast_period = 3  # type: ignore[misc]


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_strategy_timeframes_must_be_computed() -> None:
    with pytest.raises(ConfigError, match=r"needs timeframes \['4h'\]"):
        parse_config({"timeframes": ["1m", "15m"], "strategy": {"kind": "momentum_breakout"}})
