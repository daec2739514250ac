"""Bar timeframes: the names users write in configs and their length in nanoseconds."""

from __future__ import annotations

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR

TIMEFRAMES: dict[str, int] = {
    "1s": NS_PER_SECOND,
    "1m": NS_PER_MINUTE,
    "5m": 5 * NS_PER_MINUTE,
    "15m": 15 * NS_PER_MINUTE,
    "1h": NS_PER_HOUR,
    "4h": 4 * NS_PER_HOUR,
}

DEFAULT_TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAMES)


def timeframe_ns(name: str) -> int:
    """Length of a named timeframe in nanoseconds; raises ValueError naming the allowed values."""
    try:
        return TIMEFRAMES[name]
    except KeyError:
        allowed = ", ".join(TIMEFRAMES)
        raise ValueError(f"unknown timeframe {name!r}; allowed: {allowed}") from None


def parse_duration_ns(text: str | int) -> int:
    """Parse a duration such as '24h', '90m', '30s', '250ms' or a plain integer of nanoseconds."""
    if isinstance(text, int):
        return text
    units = {"ms": 1_000_000, "s": NS_PER_SECOND, "m": NS_PER_MINUTE, "h": NS_PER_HOUR,
             "d": NS_PER_DAY}
    stripped = text.strip()
    for suffix in ("ms", "s", "m", "h", "d"):
        if stripped.endswith(suffix):
            number = stripped[: -len(suffix)]
            try:
                return int(float(number) * units[suffix])
            except ValueError:
                break
    raise ValueError(f"cannot read duration {text!r}; write e.g. '24h', '15m', '30s' or '250ms'")
