"""Run configuration: YAML under `configs/`, validated into frozen typed objects at load time.

Errors name the file, the key and what is allowed. Secrets never live here: API keys come from
environment variables at run time (see `engine.secrets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.dex.signals import PhaseAConfig
from engine.execution.config import LiveTradingConfig
from engine.rules.profile import RiskProfile, load_profile
from engine.timeframes import DEFAULT_TIMEFRAMES, TIMEFRAMES, parse_duration_ns

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _positive_duration(value: str) -> str:
    if parse_duration_ns(value) <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return value


def _check_timeframe(value: str) -> str:
    if value not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {value!r}; allowed: {', '.join(TIMEFRAMES)}")
    return value


class EmaCrossConfig(_Frozen):
    """EMA(fast)/EMA(slow) crossover, long or short, reverse on cross, fixed size."""

    kind: Literal["ema_cross"] = "ema_cross"
    timeframe: str = "1m"
    fast_period: int = Field(10, ge=1)
    slow_period: int = Field(20, ge=2)
    quantity: float = Field(0.01, gt=0, description="fixed order size in base units")

    _tf = field_validator("timeframe")(_check_timeframe)


class MomentumBreakoutConfig(_Frozen):
    """Intraday momentum breakout; defaults are the specification in issue 2."""

    kind: Literal["momentum_breakout"] = "momentum_breakout"
    timeframe: str = "15m"
    trend_timeframe: str = "4h"
    donchian_period: int = Field(20, ge=2)
    trend_fast_period: int = Field(20, ge=1)
    trend_slow_period: int = Field(50, ge=2)
    volume_sma_period: int = Field(20, ge=1)
    volume_multiple: float = Field(1.5, gt=0)
    rsi_period: int = Field(14, ge=2)
    rsi_long_low: float = 50.0
    rsi_long_high: float = 75.0
    rsi_short_low: float = 25.0
    rsi_short_high: float = 50.0
    atr_period: int = Field(14, ge=2)
    atr_baseline_period: int = Field(
        100, ge=2, description="a slower ATR attached to intents as `atr_baseline`, for risk "
        "rules that scale size by baseline / current volatility"
    )
    min_atr_pct: float = Field(0.003, ge=0)
    max_atr_pct: float = Field(0.04, gt=0)
    entry_score: int = Field(4, ge=0, le=5)
    stop_atr: float = Field(1.5, gt=0)
    min_stop_pct: float = Field(0.005, ge=0)
    tp1_atr: float = Field(3.0, gt=0)
    tp1_fraction: float = Field(0.5, gt=0, le=1)
    breakeven_offset_pct: float = Field(0.0005, ge=0)
    trail_atr: float = Field(2.0, gt=0)
    tp2_atr: float = Field(6.0, gt=0)
    max_holding: str = "24h"

    _tf = field_validator("timeframe", "trend_timeframe")(_check_timeframe)

    @field_validator("max_holding")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_ns(value)
        return value

    @property
    def max_holding_ns(self) -> int:
        return parse_duration_ns(self.max_holding)


class DexLedConfig(_Frozen):
    """DEX-led CEX entries, Phase A (`engine.strategies.dex_led`): the pool's order flow, read
    from the `dex_*` bar columns the DEX join adds, signals entries on the CEX pair it leads.
    Phase B is the run's `learning` (target reward_score), which scores every signal."""

    kind: Literal["dex_led"] = "dex_led"
    timeframe: str = Field("1s", description="bars at whose close the detectors are evaluated")
    phase_a: PhaseAConfig = Field(default_factory=PhaseAConfig)
    notional: float = Field(10_000.0, gt=0, description="quote value of an entry: the size its "
                            "slippage is estimated for")
    stop_pct: float = Field(0.01, gt=0, lt=1, description="protective stop from the entry")
    max_holding: str = Field("20m", description="time exit: the label horizon T by default")
    rearm_after: str = Field("30s", description="at most one signal per this span: a burst of "
                             "order flow is one signal, not one per bar")
    tuning_memory: str = Field("6h", description="bars remembered for re-tuning the thresholds")
    label_decay_per_minute: float = Field(0.05, ge=0, description="k of the reward score a "
                                          "re-tune labels candidates with")

    _tf = field_validator("timeframe")(_check_timeframe)

    _duration = field_validator("max_holding", "rearm_after", "tuning_memory")(
        _positive_duration)


StrategyConfig = Annotated[EmaCrossConfig | MomentumBreakoutConfig | DexLedConfig,
                           Field(discriminator="kind")]


class DexPoolFeed(_Frozen):
    """One DEX pool and the CEX pair it leads."""

    tape: str = Field(description="a DEX tape directory (ats import uniswap-v3); relative paths "
                      "are from the working directory")
    cex_symbol: str = Field(min_length=1, description="the CEX pair, e.g. ETHUSDT")


class DexFeedConfig(_Frozen):
    """DEX streams joined to the CEX pairs they lead (`dataflows.dex_join`); replay only."""

    pools: tuple[DexPoolFeed, ...] = Field(min_length=1)
    chunk: str = Field("1h", description="event time per DEX slice the source emits")

    @field_validator("pools")
    @classmethod
    def _one_pool_per_pair(cls, value: tuple[DexPoolFeed, ...]) -> tuple[DexPoolFeed, ...]:
        symbols = [pool.cex_symbol for pool in value]
        repeated = sorted({symbol for symbol in symbols if symbols.count(symbol) > 1})
        if repeated:
            raise ValueError(f"one pool per CEX pair; {repeated} have several")
        return value

    _chunk = field_validator("chunk")(_positive_duration)

    def tapes(self) -> dict[str, Path]:
        """CEX symbol -> DEX tape."""
        return {pool.cex_symbol: Path(pool.tape) for pool in self.pools}


class RiskConfig(_Frozen):
    """Portfolio risk limits applied by the PortfolioRiskActor to every intent."""

    risk_per_trade: float = Field(0.01, gt=0, le=1, description="fraction of equity at risk")
    max_leverage: float = Field(3.0, gt=0)
    max_open_positions: int = Field(5, ge=1)
    max_portfolio_heat: float = Field(0.05, gt=0, le=1)
    daily_loss_limit: float = Field(0.03, gt=0, le=1)
    default_stop_pct: float = Field(
        0.02, gt=0, le=1, description="stop distance assumed for heat when an intent has none"
    )
    position_checks: bool | None = Field(
        None,
        description="at each bar close of `check_timeframe` while a position is open, ask risk "
        "(in event-time order) whether a rule wants it closed, and close it; None: on when a "
        "profile is set or manual control is enabled",
    )
    check_timeframe: str | None = Field(
        None,
        description="bars that pace position checks (and mark the position for risk); None: the "
        "strategy's primary timeframe. A shorter one (e.g. 1m under 15m bars) makes flattens "
        "prompt; it must be one of the run's `timeframes`",
    )
    profile: RiskProfile | None = Field(
        None,
        description="a risk profile (bundled name under configs/risk/, a path, or inline); "
        "when set, its rules replace the flat limits above",
    )
    spread_window: str = Field(
        "5m", description="the average spread_bps is compared with (spread_filter)")
    volume_window: str = Field(
        "24h", description="the quote volume an order's share is taken of (volume_cap)")

    _window = field_validator("spread_window", "volume_window")(_positive_duration)

    def market_context_needed(self) -> bool:
        """Whether a rule of the profile reads the engine's market facts."""
        names = {rule.rule for rule in self.profile.rules} if self.profile is not None else set()
        return bool(names & {"spread_filter", "volume_cap"})

    def slippage_estimate_needed(self) -> bool:
        """Whether a rule of the profile weighs an entry's estimated slippage."""
        names = {rule.rule for rule in self.profile.rules} if self.profile is not None else set()
        return "profit_after_slippage" in names

    @field_validator("profile", mode="before")
    @classmethod
    def _load_profile(cls, value: Any) -> Any:
        if isinstance(value, str):
            return load_profile(value)
        return value


class SimulationConfig(_Frozen):
    """Paper matching: latency, fees, slippage, partial fills. The RNG is seeded for deterministic
    replay. Latencies are explained in `engine.matching`: the feed latency delays when the
    strategy could act on what it saw, the order latency (plus jitter) is the order's trip to the
    venue. `latency_ms`/`latency_jitter_ms` are accepted as the older names of the order latency.
    """

    feed_latency_ms: float = Field(
        0.0, ge=0, description="market data age when the strategy decides (constant)"
    )
    order_latency_ms: float = Field(
        50.0,
        ge=0,
        validation_alias=AliasChoices("order_latency_ms", "latency_ms"),
        description="mean trip of an order or cancel to the venue",
    )
    order_latency_jitter_ms: float = Field(
        10.0,
        ge=0,
        validation_alias=AliasChoices("order_latency_jitter_ms", "latency_jitter_ms"),
        description="uniform jitter around the mean order latency",
    )
    maker_fee_bps: float = Field(1.0, ge=0, description="fee of resting limit-order fills")
    taker_fee_bps: float = Field(4.0, ge=0, description="fee of market and crossing fills")
    market_remainder: Literal["impact", "next_sample", "cancel"] = Field(
        "impact",
        description="what a market order larger than the visible book does with the rest: "
        "'impact' fills it at once at the last level moved by the impact term; 'next_sample' "
        "waits for the next book sample; 'cancel' cancels it",
    )
    market_remainder_timeout_ms: float = Field(
        5_000.0, gt=0, description="'next_sample': the rest still open this long is cancelled"
    )
    default_spread_bps: float = Field(
        1.0, ge=0, description="spread assumed when no quote or book is present"
    )
    impact_bps_per_unit_participation: float = Field(
        10.0, ge=0, description="impact term: bps per unit of order size / bar volume"
    )
    seed: int = 7


class ReplayConfig(_Frozen):
    """How a replay slices its input into batches (DESIGN.md: large batches in replay)."""

    batch_rows: int = Field(200_000, ge=1, description="max trades per batch")
    batch_duration: str = Field("60m", description="max event time per batch")
    workers: int = Field(1, ge=1, le=8)
    max_batches_in_flight: int = Field(4, ge=1)
    depth_levels: int = Field(20, ge=1, description="book levels sampled for the matcher")
    journal_features: bool = Field(
        True, description="journal the strategy's primary-timeframe bars and indicators"
    )

    @field_validator("batch_duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_ns(value)
        return value

    @property
    def batch_duration_ns(self) -> int:
        return parse_duration_ns(self.batch_duration)


class SupervisionConfig(_Frozen):
    """How the Ray supervisor brings a dead symbol actor back (`actors.supervisor`): it keeps the
    actor's checkpoint every `checkpoint_every` steps and the calls made since; a new actor
    restores the checkpoint, replays those calls and goes on. A run trading on a venue never
    restarts an actor by itself (a replayed step could resend an order): it stops."""

    checkpoint_every: int = Field(8, ge=1, description="steps between a symbol's checkpoints")
    max_restarts: int = Field(3, ge=0, description="per symbol; then the run fails")


VENUE_ENDPOINTS: dict[str, tuple[str, str]] = {
    # venue: (websocket base URL, REST base URL)
    "binance": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "binance-usdm": ("wss://fstream.binance.com", "https://fapi.binance.com"),
}
DEFAULT_STREAMS: dict[str, tuple[str, ...]] = {
    "binance": ("trade", "depth@100ms", "bookTicker"),
    "binance-usdm": ("trade", "depth@100ms", "bookTicker", "markPrice@1s"),
}


class LiveConfig(_Frozen):
    """The live feed: where to connect, what to subscribe, and its safety timers.

    URLs default to the venue's public endpoints; tests and `ats serve` point them at loopback.
    Keys are never configured here: `api_key_env` names the environment variable that holds one
    (only sent where a public endpoint asks for it, e.g. historical trades for gap-fill).
    """

    venue: Literal["binance", "binance-usdm"] = "binance"
    ws_url: str | None = Field(None, description="websocket base URL; default per venue")
    rest_url: str | None = Field(None, description="REST base URL; default per venue")
    streams: tuple[str, ...] | None = Field(
        None, description="per-symbol streams; default per venue"
    )
    snapshot_limit: int = Field(1000, ge=5, le=5000)
    stale_after_s: float = Field(30.0, gt=0, description="no data this long: entries blocked")
    rest_fallback_after_s: float = Field(
        2.0, ge=0, le=5, description="socket down this long: poll REST (at most 5 s)"
    )
    rest_poll_interval_s: float = Field(1.0, gt=0)
    rollover_after_s: float = Field(
        23 * 3600.0, gt=0, description="open a new connection before the venue's 24 h cut"
    )
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    ping_interval_s: float | None = Field(20.0, gt=0, description="client keepalive pings")
    ping_timeout_s: float | None = Field(20.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    gap_fill: bool = True
    max_frames_per_batch: int = Field(5000, ge=1)
    api_key_env: str | None = Field(None, description="name of an env var holding an API key")

    @field_validator("ws_url", "rest_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0] not in ("ws", "wss", "http", "https"):
            raise ValueError(f"{value!r} is not a ws://, wss://, http:// or https:// URL")
        return value.rstrip("/") if value else value

    @property
    def websocket_base(self) -> str:
        return self.ws_url or VENUE_ENDPOINTS[self.venue][0]

    @property
    def rest_base(self) -> str:
        return self.rest_url or VENUE_ENDPOINTS[self.venue][1]

    @property
    def stream_names(self) -> tuple[str, ...]:
        return self.streams or DEFAULT_STREAMS[self.venue]


class ControlConfig(_Frozen):
    """Manual control of a running engine (`ats control`, `engine.control`): the local channel
    and the file that keeps the operator's state across restarts. The channel's token is never
    configured: it comes from the environment variable ATS_CONTROL_TOKEN."""

    enabled: bool = Field(False, description="serve the control channel during `ats live`")
    host: str = Field("127.0.0.1", description="loopback address the channel binds")
    port: int = Field(8787, ge=0, le=65535, description="channel port (0: any free port)")
    state_file: Path = Field(
        Path("runs/control_state.json"),
        description="operator state (pause, HALTED, blacklist, max risk), kept across restarts",
    )

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        import ipaddress

        try:
            loopback = value == "localhost" or ipaddress.ip_address(value).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{value!r} is not a loopback address; the channel is local only")
        return value


class LimitEntryConfig(_Frozen):
    """Timings of the limit entry; durations like '15s' or '500ms'."""

    reprice_after: str = "15s"
    give_up_after: str = "30s"
    fallback: Literal["cancel", "market"] = "cancel"
    max_reprices: int = Field(1, ge=0, le=10)

    @model_validator(mode="after")
    def _check(self) -> LimitEntryConfig:
        for key in ("reprice_after", "give_up_after"):
            try:
                value = parse_duration_ns(getattr(self, key))
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None
            if value <= 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)!r}")
        if self.give_up_after_ns <= self.reprice_after_ns:
            raise ValueError("give_up_after: must be longer than reprice_after")
        return self

    @property
    def reprice_after_ns(self) -> int:
        return parse_duration_ns(self.reprice_after)

    @property
    def give_up_after_ns(self) -> int:
        return parse_duration_ns(self.give_up_after)


class EntryConfig(_Frozen):
    """How approved entries are executed: one market order (default), or the limit-entry
    tactic (`engine.tactics.limit_entry`): a limit at the touch, repriced, then cancelled or
    completed at market. Limit entries run on the paper matcher; live execution sends market
    orders (a live run refuses `limit`)."""

    order_type: Literal["market", "limit"] = "market"
    limit: LimitEntryConfig = Field(default_factory=LimitEntryConfig)


class MaintenanceConfig(_Frozen):
    """The maintenance agent of a signal learner (`engine.model_maintenance`): drift alerts,
    retraining on drift, scheduled re-tuning of the strategy's thresholds."""

    drift_delta: float = Field(0.002, gt=0, lt=1, description="ADWIN's confidence")
    drift_warmup: int = Field(50, ge=5, description="errors that set ADWIN's scale")
    retrain_on_drift: bool = True
    history: int = Field(2_000, ge=20, description="labelled signals kept to retrain from")
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    min_improvement: float = Field(0.02, ge=0, description="a fresh model must beat the current "
                                   "one's holdout error by this fraction to be swapped in")
    retune_every: str | None = Field("6h", description="re-optimise the strategy's thresholds "
                                     "this often in event time; None: never")
    retune_window: str = Field("6h", description="the latest data a re-tune scores on")
    retune_min_signals: int = Field(30, ge=1)

    _retune_window = field_validator("retune_window")(_positive_duration)

    @field_validator("retune_every")
    @classmethod
    def _retune_every(cls, value: str | None) -> str | None:
        return None if value is None else _positive_duration(value)


class LearningConfig(_Frozen):
    """An online learner per symbol (`engine.bar_learner`): it predicts the forward log return of
    the primary close over `horizon` at each primary bar close, and learns each bar's label once
    event time has passed its horizon. With `min_prediction`, a signal whose predicted return in
    its own direction is below it is journaled but not acted on."""

    model: str = Field("linear", description="online_ml regressor: linear, hoeffding_tree, "
                       "adaptive_forest (or lr, htr, arf)")
    seed: int = 7
    horizon: str = Field("5m", description="the label's forward window")
    min_prediction: float | None = Field(
        None, description="gate: act on a signal only if direction x prediction >= this")
    target: Literal["forward_return", "reward_score"] = Field(
        "forward_return", description="forward_return: every primary bar's forward log return "
        "(engine.bar_learner); reward_score: every signal's reward score, the DEX-led plan's "
        "label (engine.signal_learner)")
    decay_per_minute: float = Field(0.05, ge=0, description="reward_score: k of exp(-k t)")
    phase_b_after: int | None = Field(
        None, ge=1, description="reward_score: after this many labelled signals only "
        "candidates act (Phase B); None: Phase A throughout")
    candidate_threshold: float = Field(
        0.005, description="reward_score, Phase B: a signal acts if its prediction reaches this")
    maintenance: MaintenanceConfig | None = Field(
        None, description="reward_score: drift alerts, retraining, threshold re-tuning")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        from online_ml.models import resolve_name

        return resolve_name(value)

    _horizon = field_validator("horizon")(_positive_duration)


class RunConfig(_Frozen):
    """Everything a replay or live run needs, apart from the input and the journal path."""

    name: str = "run"
    initial_equity: float = Field(100_000.0, gt=0)
    timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES
    strategy: StrategyConfig = Field(default_factory=MomentumBreakoutConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    entry: EntryConfig = Field(default_factory=EntryConfig)
    learning: LearningConfig | None = Field(
        None, description="an online learner per symbol inside its actor; None: none")
    dex: DexFeedConfig | None = Field(
        None, description="DEX pools joined to the CEX pairs they lead; None: no DEX data")
    execution: LiveTradingConfig | None = Field(
        None, description="live orders on a venue for `ats live --execute`; None: paper only"
    )
    metrics_port: int | None = Field(None, ge=0, le=65535)
    actors: Literal["ray", "in_process"] = Field(
        "ray",
        description="'ray': symbol, risk and journal actors on Ray (dashboard, isolation); "
        "'in_process': the same engine objects in the driver process (lowest live latency on a "
        "small machine; no Ray)",
    )

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _check_timeframe(name)
        return tuple(sorted(set(value), key=lambda name: TIMEFRAMES[name]))

    @model_validator(mode="after")
    def _strategy_timeframes_are_computed(self) -> RunConfig:
        check = self.risk.check_timeframe
        if check is not None and check not in self.timeframes:
            raise ValueError(
                f"risk.check_timeframe {check!r} is not computed: add it to `timeframes` "
                f"({', '.join(self.timeframes)})"
            )
        needed = [self.strategy.timeframe]
        if isinstance(self.strategy, MomentumBreakoutConfig):
            needed.append(self.strategy.trend_timeframe)
        missing = [name for name in needed if name not in self.timeframes]
        if missing:
            raise ValueError(
                f"strategy {self.strategy.kind} needs timeframes {missing}, which `timeframes` "
                f"({', '.join(self.timeframes)}) does not compute"
            )
        if isinstance(self.strategy, DexLedConfig) and self.dex is None:
            raise ValueError("strategy dex_led reads the DEX pool of each pair: add `dex.pools` "
                             "(a DEX tape and the CEX pair it leads)")
        return self


class ConfigError(ValueError):
    """A config file could not be read or failed validation; the message names file and key."""


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"invalid config {path}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: Path | str = "<dict>") -> RunConfig:
    """Validate a mapping into a RunConfig; raises ConfigError naming the key."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(Path(source), error)) from None


def load_config(path: Path | str) -> RunConfig:
    """Load and validate a YAML run config."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(data).__name__}")
    return parse_config(data, path)


def config_hash_text(config: RunConfig) -> str:
    """Canonical JSON of a config, for the journal's `runs` row."""
    return config.model_dump_json()
