"""The one place a run is wired: input source, feature dataflow, actors, journal.

Replay and live differ only in the source, the clock and the broker; this module picks them and
hands the rest to the same dataflow and actors. The CLI calls it; tests and the benchmark too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import RunConfig, config_hash_text, load_config
from engine.metrics import RunMetrics
from engine.timeframes import parse_duration_ns

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CAPTURES = (
    REPO_ROOT / "data" / "binance-spot" / "btcusdt_20240808.gz",
    REPO_ROOT / "data" / "binance-spot" / "btcusdt_20240809.gz",
)
SAMPLE_CONFIG = REPO_ROOT / "configs" / "sample.yaml"
CAPTURE_CHUNK_LINES = 20_000


@dataclass(frozen=True)
class ReplayInput:
    """What a replay reads: a Parquet tape directory or raw capture files."""

    kind: str  # "tape" or "capture"
    paths: tuple[Path, ...]
    symbols: tuple[str, ...]
    total_events: int | None = None

    @property
    def display(self) -> str:
        return ", ".join(_display_path(path) for path in self.paths)


def _display_path(path: Path) -> str:
    """Paths inside the checkout are shown relative to it, so journals carry no machine paths."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def resolve_input(paths: list[Path] | None, symbol_hint: str | None = None,
                  venue: str | None = None) -> ReplayInput:
    """Decide whether `paths` is a tape or captures, and list its symbols up front (the
    supervisor must know every symbol before any risk decision). Captures of venues other than
    Binance are listed by parsing them (their frames name symbols in venue-specific ways)."""
    from dataflows.capture_scan import scan_capture_symbols
    from dataflows.sources import events_in
    from dataflows.venues import parse_captures, venue_of
    from storage.tape import TapeReader

    chosen = [Path(path) for path in (paths or list(SAMPLE_CAPTURES))]
    for path in chosen:
        if not path.exists():
            raise FileNotFoundError(f"replay input {path} does not exist")
    # A recording directory (storage.recording) replays as its capture segments, in order.
    expanded = [segment for path in chosen for segment in _recording_segments(path)]
    if not expanded:
        raise ValueError(f"recording {', '.join(map(str, chosen))} has no finalized segment")
    chosen = expanded
    if len(chosen) == 1 and chosen[0].is_dir():
        reader = TapeReader(chosen[0])
        rows = reader.metadata.get("rows", {})
        total = sum(int(rows.get(table, 0)) for table in ("trades", "book_deltas", "best_bid_ask"))
        return ReplayInput("tape", (chosen[0],), tuple(reader.symbols), total or None)
    symbols: set[str] = set()
    lines = 0
    if any(venue_of(path, venue) != "binance" for path in chosen):
        for chunks, _letters in parse_captures(chosen, venue, symbol_hint):
            symbols |= {chunk.symbol for chunk in chunks}
            lines += sum(events_in(chunk) for chunk in chunks)
        if not symbols:
            raise ValueError(f"no symbol found in capture files: {', '.join(map(str, chosen))}")
        return ReplayInput("capture", tuple(chosen), tuple(sorted(symbols)), lines)
    for path in chosen:
        found, count = scan_capture_symbols(path)
        symbols |= found
        lines += count
    if symbol_hint:
        symbols.add(symbol_hint.upper())
    if not symbols:
        raise ValueError(f"no symbol found in capture files: {', '.join(map(str, chosen))}")
    return ReplayInput("capture", tuple(chosen), tuple(sorted(symbols)), lines)


def _recording_segments(path: Path) -> list[Path]:
    """The capture segments of a recording directory, or `[path]` for any other input."""
    from storage.recording import is_recording, recording_inputs

    return recording_inputs(path) if is_recording(path) else [path]


def data_hash(replay_input: ReplayInput, extra: Sequence[Path] = ()) -> str:
    """SHA-256 over the input files' bytes (a tape's files in name order), then those of
    `extra` inputs (the DEX tapes a run joins)."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in [*replay_input.paths, *extra]:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    from importlib.metadata import version

    base = version("ats")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{base}+{commit}" if commit else base


def start_ray(dashboard: bool = False, address: str | None = None) -> float:
    """Start a local Ray, or join the cluster at `address` (or $RAY_ADDRESS), e.g. one started
    with `ray start --head` whose dashboard shows the actors. Returns the seconds it took."""
    import ray

    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
    else:
        ray.init(
            include_dashboard=dashboard,
            logging_level=logging.WARNING,
            object_store_memory=1024**3,
            configure_logging=True,
        )
    return time.perf_counter() - started


@dataclass
class RunResult:
    run_id: str
    journal_path: Path
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


class _Progress:
    """Counts events read; draws a tqdm bar when asked to."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.events = 0
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="ev", unit_scale=True, desc="replay", leave=True)

    def __call__(self, events: int) -> None:
        self.events += events
        if self._bar is not None:
            self._bar.update(events)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _resolve_config(config: RunConfig | Path | str | None, default: Path | None) -> RunConfig:
    if config is None:
        return load_config(default) if default is not None else RunConfig()
    return config if isinstance(config, RunConfig) else load_config(config)


def _new_run(config: RunConfig, journal_path: Path | str | None) -> tuple[str, Path]:
    run_id = f"{config.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    journal = Path(journal_path) if journal_path else Path("runs") / run_id / "journal.duckdb"
    if journal.exists():
        raise FileExistsError(f"journal {journal} already exists; choose another --journal path")
    return run_id, journal


@dataclass
class _Pipeline:
    """What replay and live share: metrics, supervisor and actors, the dataflow, the journal."""

    config: RunConfig
    run_id: str
    journal: Path
    symbols: tuple[str, ...]
    mode: str
    metrics: RunMetrics
    timings: dict[str, float]
    latency: Any = None
    step_calls: int = 0
    pauses: int = 0
    supervisor: Any = None  # the running supervisor (live control reaches risk through it)

    def run(self, source: Any, workers: int, on_resync: Any = None,
            before_run: Any = None) -> dict[str, Any]:
        """Run the dataflow to its end; close the actors (abort them on failure).

        `before_run` is called once the flow is built and the actors exist, right before the
        dataflow starts (live mode opens its feed there, so no frame waits for start-up)."""
        started = time.perf_counter()
        from bytewax.run import cli_main

        from dataflows.flow import build_flow
        from dataflows.sinks import SupervisorSink
        from engine.symbol_engine import SymbolEngine

        supervisor_class: Any
        if self.config.actors == "in_process":
            from actors.in_process import InProcessSupervisor

            supervisor_class = InProcessSupervisor
        else:
            from actors.supervisor import Supervisor

            supervisor_class = Supervisor
        supervisor = supervisor_class(self.config, self.symbols, str(self.journal), self.run_id,
                                self.metrics, live=self.mode != "replay", latency=self.latency)
        self.supervisor = supervisor
        flow = build_flow(
            source,
            SupervisorSink(supervisor, on_resync),
            timeframes=self.config.timeframes,
            indicators=tuple(SymbolEngine.required_indicators(self.config)),
            depth_levels=self.config.replay.depth_levels,
            **self._dex_inputs(),
        )
        try:
            supervisor.wait_ready()
            # creating the actors (and what they import) is start-up, not throughput
            self.timings["actors_start_s"] = time.perf_counter() - started
            if before_run is not None:
                before_run()
            cli_main(flow, workers_per_process=workers)
            closing = supervisor.close()
        except BaseException:
            supervisor.abort()
            raise
        self.step_calls = supervisor.step_calls
        self.pauses = supervisor.pauses
        return closing

    def _dex_inputs(self) -> dict[str, Any]:
        """The DEX source and the pairs it joins, when the config maps pools (replay only)."""
        dex = self.config.dex
        if dex is None:
            return {}
        from dataflows.dex_join import DexTapeSource

        return {"dex_source": DexTapeSource(dex.tapes(), parse_duration_ns(dex.chunk)),
                "dex_symbols": frozenset(dex.tapes())}

    def finish(self, closing: dict[str, Any], started_at: datetime, events: int, workers: int,
               input_display: str, input_hash: str) -> RunResult:
        """Summarise the journal and write the `runs` row."""
        from storage.journal import JournalWriter
        from storage.report import journal_summary

        self.metrics.add("events", events)
        summary = journal_summary(self.journal, self.config.initial_equity)
        summary.update(
            {
                "run_id": self.run_id,
                "input": input_display,
                "symbols": list(self.symbols),
                "events": events,
                "bars": self.metrics.totals["bars"],
                "journal": str(self.journal),
                "workers": workers,
                "actor_calls": self.step_calls,
                "pauses": self.pauses,
            }
        )
        summary["portfolio"] = closing["portfolio"]
        with JournalWriter(self.journal, self.run_id) as writer:
            writer.append(
                "runs",
                [
                    {
                        "key": self.run_id,
                        "started_at": started_at,
                        "finished_at": datetime.now(UTC),
                        "mode": self.mode,
                        "input_path": input_display,
                        "data_hash": input_hash,
                        "config": config_hash_text(self.config),
                        "code_version": code_version(),
                        "workers": workers,
                        "summary": _summary_json(summary),
                    }
                ],
            )
        return RunResult(self.run_id, self.journal, summary, self.timings)


def _start(config: RunConfig, mode: str, symbols: tuple[str, ...], journal_path: Path | str | None,
           dashboard: bool, ray_address: str | None, metrics_port: int | None) -> _Pipeline:
    run_id, journal = _new_run(config, journal_path)
    timings: dict[str, float] = {}
    if config.actors == "ray":
        timings["ray_start_s"] = start_ray(dashboard, ray_address)
    metrics = RunMetrics()
    port = metrics_port if metrics_port is not None else config.metrics_port
    if port is not None:
        timings["metrics_port"] = metrics.serve(port)
    return _Pipeline(config, run_id, journal, symbols, mode, metrics, timings)


def run_replay(
    input_paths: list[Path] | None = None,
    config: RunConfig | Path | str | None = None,
    journal_path: Path | str | None = None,
    workers: int | None = None,
    *,
    symbol_hint: str | None = None,
    progress: bool = False,
    dashboard: bool = False,
    metrics_port: int | None = None,
    ray_address: str | None = None,
    venue: str | None = None,
    in_process: bool = False,
) -> RunResult:
    """Replay a tape or raw captures through features, actors and journal; return the summary.
    `venue` picks the parser of raw captures (default: Binance, or a cryptofeed file's own);
    `in_process` runs the engine objects in this process instead of Ray actors."""
    from dataflows.sources import CaptureSource, TapeSource

    config = _resolve_config(config, SAMPLE_CONFIG if input_paths is None else None)
    # a replay fills on paper, whatever the config says about a venue
    config = config.model_copy(update={"execution": None})
    if in_process:
        config = config.model_copy(update={"actors": "in_process"})
    workers = workers or config.replay.workers
    replay_input = resolve_input(input_paths, symbol_hint, venue)
    dex_tapes = list(config.dex.tapes().values()) if config.dex is not None else []
    input_hash = data_hash(replay_input, dex_tapes)
    started_at = datetime.now(UTC)
    pipeline = _start(config, "replay", replay_input.symbols, journal_path, dashboard,
                      ray_address, metrics_port)
    tracker = _Progress(replay_input.total_events, progress)
    span_start = time.perf_counter()
    source: Any
    if replay_input.kind == "tape":
        source = TapeSource(
            replay_input.paths[0], config.replay.batch_rows, config.replay.batch_duration_ns,
            tracker,
        )
    else:
        source = CaptureSource(
            list(replay_input.paths), CAPTURE_CHUNK_LINES, symbol_hint, tracker, venue
        )
    try:
        closing = pipeline.run(source, workers)
    finally:
        tracker.close()
    pipeline.timings["replay_s"] = time.perf_counter() - span_start
    return pipeline.finish(closing, started_at, tracker.events, workers, replay_input.display,
                           input_hash)


def run_live(
    symbols: list[str],
    config: RunConfig | Path | str | None = None,
    journal_path: Path | str | None = None,
    *,
    stop: threading.Event | None = None,
    record_to: Path | None = None,
    dashboard: bool = False,
    metrics_port: int | None = None,
    ray_address: str | None = None,
    latency: Any = None,
    frame_observer: Any = None,
    execute: bool = False,
) -> RunResult:
    """Trade the live feed through the same dataflow and actors as a replay, until `stop` is set
    (the CLI sets it on Ctrl-C); then drain what was received, close the actors and the journal.
    Paper fills unless `execute`, which sends orders to the venue of `config.execution`
    (required then). With `record_to`, every frame the pipeline parsed is also recorded there."""
    from dataflows.live.feed import BinanceFeed
    from dataflows.live.source import LiveSource

    config = _resolve_config(config, None)
    if config.dex is not None:
        raise ValueError("`dex` pools are joined in replay only: no live DEX feed exists yet; "
                         "remove `dex` (and a dex_led strategy) from a live config")
    if execute and config.execution is None:
        raise ValueError("live execution needs an `execution:` section in the run config "
                         "(venue, symbols, state file); see configs/live_execution.yaml")
    if execute and config.entry.order_type != "market":
        raise ValueError("live execution sends market entries only: set entry.order_type: "
                         "market (limit entries run on the paper matcher)")
    if not execute:
        config = config.model_copy(update={"execution": None})
    wanted = tuple(sorted({symbol.upper() for symbol in symbols}))
    if not wanted:
        raise ValueError("ats live needs at least one symbol (--symbols BTCUSDT,ETHUSDT)")
    stop = stop or threading.Event()
    control = _LiveControl(config, stop) if config.control.enabled else None
    started_at = datetime.now(UTC)
    pipeline = _start(config, "live" if execute else "live_paper", wanted, journal_path,
                      dashboard, ray_address, metrics_port)
    pipeline.latency = latency
    feed = BinanceFeed(config.live, wanted)
    recorder = _live_recorder(config, wanted, record_to) if record_to is not None else None
    counted = _FrameCounter(pipeline.metrics, feed, recorder, frame_observer)
    source = LiveSource(feed.buffer, wanted, stop, max_frames=config.live.max_frames_per_batch,
                        on_frames=counted, source_name=f"live:{config.live.venue}")
    span_start = time.perf_counter()
    def before_run() -> None:
        if control is not None:  # the operator's persisted state holds before the first frame
            pipeline.timings["control_port"] = control.start(pipeline.supervisor)
        feed.start()

    try:
        closing = pipeline.run(source, 1, on_resync=feed.request_snapshot,
                               before_run=before_run)
    finally:
        if control is not None:
            control.stop()
        feed.stop()
        if recorder is not None:
            recorder.close()
    pipeline.timings["live_s"] = time.perf_counter() - span_start
    pipeline.timings.update({f"feed_{key}": float(value) for key, value in feed.stats.items()})
    display = f"live {config.live.venue} {config.live.websocket_base}"
    return pipeline.finish(closing, started_at, counted.frames, 1, display, "")


def run_record(symbols: list[str], config: RunConfig, out: Path, stop: threading.Event, *,
               rotate_bytes: int, rotate_seconds: float) -> dict[str, Any]:
    """Record the live feed into `out` (raw capture and tape segments) until `stop` is set;
    then write what was received and finalize every segment. Returns a summary."""
    from dataflows.binance import BinanceParser
    from dataflows.live.feed import BinanceFeed
    from storage.recorder import Recorder, RecorderConfig

    recorder_config = RecorderConfig(out_dir=out, venue=config.live.venue, symbols=tuple(symbols),
                                     rotate_bytes=rotate_bytes, rotate_seconds=rotate_seconds)
    feed = BinanceFeed(config.live, symbols)
    frames = 0
    with Recorder(recorder_config, BinanceParser) as recorder:
        feed.start()
        try:
            while not stop.is_set() or feed.buffer.pending:
                if not feed.buffer.wait(1.0):
                    recorder.flush()  # a quiet feed: keep what is written readable
                    continue
                times, batch = feed.buffer.drain(config.live.max_frames_per_batch)
                recorder.write_many(times, batch)
                frames += len(batch)
        finally:
            feed.stop()
            times, batch = feed.buffer.drain(10**9)
            if batch:
                recorder.write_many(times, batch)
                frames += len(batch)
    return {"recorded_frames": frames, "out": str(out),
            **{f"feed_{key}": value for key, value in feed.stats.items()}}


def run_serve(args: Any) -> int:
    """`ats serve`: the loopback Binance (a test tool; wired here like every other command)."""
    from dataflows.live.replay_cli import run_serve as serve

    return serve(args)


class _FrameCounter:
    """Counts (and optionally records) the frames the live source parses."""

    def __init__(self, metrics: RunMetrics, feed: Any, recorder: Any, observer: Any) -> None:
        self.frames = 0
        self._metrics = metrics
        self._feed = feed
        self._recorder = recorder
        self._observer = observer

    def __call__(self, times: list[int], frames: list[bytes]) -> None:
        self.frames += len(frames)
        self._metrics.add("live_frames", len(frames))
        self._metrics.feed_pending.set(self._feed.buffer.pending)
        if self._recorder is not None:
            self._recorder(times, frames)
        if self._observer is not None:
            self._observer(times, frames)


def _live_recorder(config: RunConfig, symbols: tuple[str, ...], out: Path) -> Any:
    from dataflows.binance import BinanceParser
    from dataflows.live.record_tap import BackgroundRecorder
    from storage.recorder import Recorder, RecorderConfig

    recorder = Recorder(RecorderConfig(out_dir=out, venue=config.live.venue, symbols=symbols),
                        BinanceParser)
    return BackgroundRecorder(recorder)


def _summary_json(summary: dict[str, Any]) -> str:
    from storage.journal import to_json

    run_specific = {"run_id", "journal", "workers", "actor_calls", "pauses"}
    stable = {key: value for key, value in summary.items() if key not in run_specific}
    return to_json(stable)


class _LiveControl:
    """`ats control` during `ats live` (config `control.enabled`): the persisted operator state
    is applied to the risk actor before the feed opens, and the channel serves until the run is
    asked to stop (the journal closes after that). Refuses to start without ATS_CONTROL_TOKEN."""

    def __init__(self, config: RunConfig, stop: threading.Event) -> None:
        from engine.control.channel import ControlChannelError, token_from_env

        try:
            token_from_env()  # fail before anything starts
        except ControlChannelError as error:
            raise ValueError(str(error)) from None
        self.settings = config.control
        self._stop = stop
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self, supervisor: Any) -> float:
        """Apply the persisted state, open the channel; returns the port it listens on."""
        from engine.control.channel import ControlServer
        from engine.control.controller import Controller

        # both supervisors (Ray actors, in process) take the state and journal the commands
        controller = Controller(self.settings.state_file, supervisor,
                                execution=supervisor.execution,
                                journal=supervisor.journal_control)
        controller.start()
        with self._lock:
            self._server = ControlServer(controller, self.settings.host,
                                         self.settings.port).start()
            port = float(self._server.port)
        threading.Thread(target=self._stop_with_run, name="ats-control-stop", daemon=True).start()
        return port

    def _stop_with_run(self) -> None:
        self._stop.wait()
        self.stop()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()
