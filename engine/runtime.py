"""The one place a run is wired: input source, feature dataflow, actors, journal.

Replay and live differ only in the source, the clock and the broker; this module picks them and
hands the rest to the same dataflow and actors. The CLI calls it; tests and the benchmark too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import RunConfig, config_hash_text, load_config
from engine.metrics import RunMetrics

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


def resolve_input(paths: list[Path] | None, symbol_hint: str | None = None) -> ReplayInput:
    """Decide whether `paths` is a tape or captures, and list its symbols up front (the
    supervisor must know every symbol before any risk decision)."""
    from dataflows.capture_scan import scan_capture_symbols
    from storage.tape import TapeReader

    chosen = [Path(path) for path in (paths or list(SAMPLE_CAPTURES))]
    for path in chosen:
        if not path.exists():
            raise FileNotFoundError(f"replay input {path} does not exist")
    if len(chosen) == 1 and chosen[0].is_dir():
        reader = TapeReader(chosen[0])
        rows = reader.metadata.get("rows", {})
        total = sum(int(rows.get(table, 0)) for table in ("trades", "book_deltas", "best_bid_ask"))
        return ReplayInput("tape", (chosen[0],), tuple(reader.symbols), total or None)
    symbols: set[str] = set()
    lines = 0
    for path in chosen:
        found, count = scan_capture_symbols(path)
        symbols |= found
        lines += count
    if symbol_hint:
        symbols.add(symbol_hint.upper())
    if not symbols:
        raise ValueError(f"no symbol found in capture files: {', '.join(map(str, chosen))}")
    return ReplayInput("capture", tuple(chosen), tuple(sorted(symbols)), lines)


def data_hash(replay_input: ReplayInput) -> str:
    """SHA-256 over the input files' bytes (a tape's files in name order)."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in replay_input.paths:
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
) -> RunResult:
    """Replay a tape or raw captures through features, actors and journal; return the summary."""
    from bytewax.run import cli_main

    from actors.supervisor import Supervisor
    from dataflows.flow import build_flow
    from dataflows.sinks import SupervisorSink
    from dataflows.sources import CaptureSource, TapeSource
    from engine.symbol_engine import SymbolEngine
    from storage.journal import JournalWriter
    from storage.report import journal_summary

    if config is None:
        config = load_config(SAMPLE_CONFIG) if input_paths is None else RunConfig()
    elif not isinstance(config, RunConfig):
        config = load_config(config)
    workers = workers or config.replay.workers
    replay_input = resolve_input(input_paths, symbol_hint)
    input_hash = data_hash(replay_input)
    run_id = f"{config.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    journal = Path(journal_path) if journal_path else Path("runs") / run_id / "journal.duckdb"
    if journal.exists():
        raise FileExistsError(f"journal {journal} already exists; choose another --journal path")
    started_at = datetime.now(UTC)
    timings = {"ray_start_s": start_ray(dashboard, ray_address)}

    metrics = RunMetrics()
    port = metrics_port if metrics_port is not None else config.metrics_port
    if port is not None:
        timings["metrics_port"] = metrics.serve(port)

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
            list(replay_input.paths), CAPTURE_CHUNK_LINES, symbol_hint, tracker
        )
    supervisor = Supervisor(config, replay_input.symbols, str(journal), run_id, metrics)
    indicators = tuple(SymbolEngine.required_indicators(config))
    flow = build_flow(
        source,
        SupervisorSink(supervisor),
        timeframes=config.timeframes,
        indicators=indicators,
        depth_levels=config.replay.depth_levels,
    )
    try:
        cli_main(flow, workers_per_process=workers)
        closing = supervisor.close()
    except BaseException:
        supervisor.abort()
        raise
    finally:
        tracker.close()
    timings["replay_s"] = time.perf_counter() - span_start
    metrics.add("events", tracker.events)

    summary = journal_summary(journal, config.initial_equity)
    summary.update(
        {
            "run_id": run_id,
            "input": replay_input.display,
            "symbols": list(replay_input.symbols),
            "events": tracker.events,
            "bars": metrics.totals["bars"],
            "journal": str(journal),
            "workers": workers,
            "actor_calls": supervisor.step_calls,
            "pauses": supervisor.pauses,
        }
    )
    summary["portfolio"] = closing["portfolio"]
    with JournalWriter(journal, run_id) as writer:
        writer.append(
            "runs",
            [
                {
                    "key": run_id,
                    "started_at": started_at,
                    "finished_at": datetime.now(UTC),
                    "mode": "replay",
                    "input_path": replay_input.display,
                    "data_hash": input_hash,
                    "config": config_hash_text(config),
                    "code_version": code_version(),
                    "workers": workers,
                    "summary": _summary_json(summary),
                }
            ],
        )
    return RunResult(run_id, journal, summary, timings)


def _summary_json(summary: dict[str, Any]) -> str:
    from storage.journal import to_json

    run_specific = {"run_id", "journal", "workers", "actor_calls", "pauses"}
    stable = {key: value for key, value in summary.items() if key not in run_specific}
    return to_json(stable)

