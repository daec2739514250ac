"""`ats live --paper|--execute` and `ats record`: the live feed through the pipeline, or to disk.

Both run until Ctrl-C (or `--duration`), then stop cleanly: the frames already received are
parsed, the journal or the recording is flushed and finalized. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from engine.config import LiveConfig, RunConfig, load_config


def _symbols(text: str) -> list[str]:
    symbols = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not symbols:
        raise ValueError(f"--symbols {text!r} names no symbol; give e.g. BTCUSDT,ETHUSDT")
    return symbols


def live_config(args: argparse.Namespace) -> RunConfig:
    """The run config with the command line's venue and URL overrides, validated again."""
    config = load_config(args.config) if args.config else RunConfig()
    streams = tuple(part.strip() for part in args.streams.split(",")) if args.streams else None
    overrides = {key: value for key, value in (
        ("venue", args.venue), ("ws_url", args.ws_url), ("rest_url", args.rest_url),
        ("stale_after_s", args.stale_after_s), ("streams", streams)) if value is not None}
    live = LiveConfig.model_validate({**config.live.model_dump(), **overrides})
    actors = "in_process" if getattr(args, "in_process", False) else config.actors
    return config.model_copy(update={"live": live, "actors": actors})


def _stop_on_signals(stop: threading.Event, duration_s: float | None) -> None:
    """First Ctrl-C (or SIGTERM, or the duration) asks for a clean stop; the second aborts."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nats: stopping: draining received frames and closing the journal "
              "(Ctrl-C again to abort)", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if duration_s is not None:
        timer = threading.Timer(duration_s, stop.set)
        timer.daemon = True
        timer.start()


def _cmd_live(args: argparse.Namespace) -> int:
    from engine.cli import print_summary
    from engine.runtime import run_live

    if args.paper == args.execute:
        raise ValueError("choose one: `ats live --paper` (simulated fills) or "
                         "`ats live --execute` (orders on the venue of the config's execution:)")
    config = live_config(args)
    symbols = _symbols(args.symbols)
    mode = "--paper"
    if args.execute:
        if config.execution is None:
            raise ValueError(f"--execute needs an `execution:` section in --config "
                             f"{args.config or '(none given)'}; see configs/live_execution.yaml")
        for symbol in symbols:
            config.execution.venue_symbol(symbol)
        venue = config.execution.venue
        mode = f"--execute on {venue.venue} {venue.environment}"
    stop = threading.Event()
    _stop_on_signals(stop, args.duration)
    print(f"ats live {mode}: {', '.join(symbols)} on {config.live.venue} "
          f"({config.live.websocket_base}); Ctrl-C stops", file=sys.stderr)
    result = run_live(
        symbols, config, Path(args.journal) if args.journal else None, stop=stop,
        record_to=Path(args.record) if args.record else None,
        dashboard=args.dashboard, metrics_port=args.metrics_port, ray_address=args.ray_address,
        execute=args.execute,
    )
    print_summary(result.summary)
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from engine.runtime import run_record

    config = live_config(args)
    symbols = _symbols(args.symbols)
    stop = threading.Event()
    _stop_on_signals(stop, args.duration)
    print(f"ats record: {', '.join(symbols)} on {config.live.venue} into {args.out}; "
          "Ctrl-C stops", file=sys.stderr)
    summary = run_record(symbols, config, Path(args.out), stop,
                         rotate_bytes=int(args.rotate_mb * 2**20),
                         rotate_seconds=args.rotate_minutes * 60.0)
    for key, value in summary.items():
        print(f"  {key:<20} {value}")
    return 0


def _add_feed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--venue", choices=("binance", "binance-usdm"), default=None,
                        help="default: the config's live.venue (binance)")
    parser.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    parser.add_argument("--config", metavar="PATH", help="run config YAML (its `live:` section)")
    parser.add_argument("--ws-url", default=None, help="websocket base URL (e.g. a loopback "
                        "`ats serve`); default: the venue's")
    parser.add_argument("--rest-url", default=None, help="REST base URL; default: the venue's")
    parser.add_argument("--streams", default=None, help="per-symbol streams, e.g. "
                        "trade,depth@0ms,bookTicker; default: the venue's (config live.streams)")
    parser.add_argument("--stale-after-s", type=float, default=None,
                        help="stale-data alarm (default 30 s)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop by itself after S seconds")


def add_live_commands(commands: Any) -> None:
    """Register `live` and `record` on the `ats` sub-command parser."""
    live = commands.add_parser("live", help="trade the live feed: paper fills or a venue")
    live.add_argument("--paper", action="store_true", help="simulated fills (paper matcher)")
    live.add_argument("--execute", action="store_true",
                      help="orders on the venue of the config's `execution:` section (keys from "
                           "the environment variables it names)")
    _add_feed_options(live)
    live.add_argument("--journal", metavar="PATH", help="DuckDB journal to create")
    live.add_argument("--record", metavar="DIR", help="also record every frame into DIR")
    live.add_argument("--metrics-port", type=int, default=None)
    live.add_argument("--dashboard", action="store_true", help="start the Ray dashboard")
    live.add_argument("--in-process", action="store_true",
                      help="run the engine objects in this process instead of Ray actors "
                           "(lowest latency; no dashboard)")
    live.add_argument("--ray-address", default=None, help="join a running Ray cluster")
    live.set_defaults(handler=_cmd_live)

    record = commands.add_parser("record", help="record a live feed: raw capture + tape")
    _add_feed_options(record)
    record.add_argument("--out", required=True, metavar="DIR")
    record.add_argument("--rotate-mb", type=float, default=256.0,
                        help="start a new segment after this much raw text")
    record.add_argument("--rotate-minutes", type=float, default=60.0,
                        help="start a new segment after this much receive time")
    record.set_defaults(handler=_cmd_record)
