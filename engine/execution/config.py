"""Configuration of live execution: venue, environment, timers, where HALTED is kept.

Frozen and validated like every ATS config; errors name the key. API keys are never part of it:
`api_key_env` / `api_secret_env` name the environment variables that hold them at run time.
The ccxt rate limiter cannot be turned off: `enable_rate_limit: false` is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")


class ExecutionConfig(BaseModel):
    """Live order execution through ccxt (Binance USD-M futures or spot)."""

    # a key pasted where an env var name belongs must not be echoed by a validation error
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    run_id: str = Field(min_length=1, description="prefix source of deterministic client ids")
    state_file: Path = Field(description="JSON file keeping HALTED and the order sequence")
    venue: Literal["binance-usdm", "binance"] = "binance-usdm"
    environment: Literal["testnet", "demo", "live"] = Field(
        "testnet", description="testnet: ccxt sandbox (USD-M: Binance demo trading); live: money"
    )
    symbols: tuple[str, ...] = Field(
        ("BTC/USDT:USDT",), min_length=1, description="ccxt unified symbols traded"
    )
    urls: dict[str, str] | None = Field(
        None, description="overrides of ccxt urls['api'] entries (tests: a loopback server)"
    )
    api_key_env: str = "ATS_BINANCE_KEY"
    api_secret_env: str = "ATS_BINANCE_SECRET"
    enable_rate_limit: bool = True
    timeout_ms: int = Field(10_000, ge=100, le=60_000)
    read_retries: int = Field(3, ge=0, le=10, description="retries of a read on network errors")
    retry_backoff_s: float = Field(0.5, ge=0, description="first retry delay, doubled each time")
    unknown_grace_s: float = Field(
        15.0, gt=0, description="an order absent at the venue this long after sending: REJECTED"
    )
    watchdog_timeout_s: float = Field(
        60.0, gt=0, description="no heartbeat this long: cancel all and flatten"
    )
    countdown_cancel_ms: int = Field(
        120_000, ge=0, description="venue countdown cancel-all refreshed on heartbeat; 0: off"
    )

    @field_validator("enable_rate_limit")
    @classmethod
    def _rate_limit_on(cls, value: bool) -> bool:
        if not value:
            raise ValueError("the ccxt rate limiter must stay on (enable_rate_limit: true)")
        return value

    @field_validator("api_key_env", "api_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                "must be the NAME of an environment variable (A-Z, 0-9, _), never a key itself"
            )
        return value

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, url in (value or {}).items():
            if url.split("://", 1)[0] not in ("http", "https"):
                raise ValueError(f"urls.{name}: {url!r} is not an http:// or https:// URL")
        return value

    @field_validator("countdown_cancel_ms")
    @classmethod
    def _countdown(cls, value: int) -> int:
        if value and value < 10_000:
            raise ValueError("a countdown below 10000 ms would cancel between heartbeats; 0: off")
        return value


class LiveTradingConfig(BaseModel):
    """`ats live --execute`: the run's approved orders go to a venue instead of the paper matcher.

    `symbols` maps each engine symbol (the feed's, e.g. BTCUSDT) to the venue's ccxt unified
    symbol (BTC/USDT:USDT); a live run refuses a symbol it does not map. `venue` is the
    `ExecutionConfig`; its `symbols` default to the mapping's values and must equal them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    symbols: dict[str, str] = Field(min_length=1, description="engine symbol -> ccxt symbol")
    venue: ExecutionConfig
    venue_stops: bool = Field(
        True, description="hold each position's initial stop on the venue (STOP_MARKET)"
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="how often the run tells the dead-man switch it is alive"
    )
    order_poll_s: float = Field(
        5.0, gt=0, description="event time between two queries of resting venue orders"
    )

    @model_validator(mode="before")
    @classmethod
    def _venue_symbols_from_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("venue"), dict) and isinstance(
                data.get("symbols"), dict) and "symbols" not in data["venue"]:
            venue = {**data["venue"], "symbols": tuple(dict.fromkeys(data["symbols"].values()))}
            return {**data, "venue": venue}
        return data

    @model_validator(mode="after")
    def _mapping_matches_venue(self) -> LiveTradingConfig:
        mapped = set(self.symbols.values())
        if mapped != set(self.venue.symbols):
            raise ValueError(
                f"execution.venue.symbols {sorted(self.venue.symbols)} must be the symbols that "
                f"execution.symbols maps to ({sorted(mapped)})")
        if len(mapped) != len(self.symbols):
            raise ValueError("execution.symbols maps two engine symbols to one venue symbol")
        return self

    def venue_symbol(self, symbol: str) -> str:
        """The ccxt symbol of an engine symbol; a clear error when it is not mapped."""
        try:
            return self.symbols[symbol]
        except KeyError:
            raise ValueError(
                f"symbol {symbol} has no venue symbol: add it to execution.symbols "
                f"(maps {sorted(self.symbols)})") from None
