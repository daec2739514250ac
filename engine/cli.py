"""The `ats` command line: replay, synthesize, import, report and benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

VENUE_CHOICES = ("binance", "binance-usdm", "coinbase", "okx", "kraken")
SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("events", "events"),
    ("bars", "bars"),
    ("signals", "signals"),
    ("approved_intents", "approved intents"),
    ("rejected_intents", "rejected intents"),
    ("fills", "fills"),
    ("round_trips", "round-trip trades"),
    ("pnl", "P&L"),
    ("max_drawdown", "max drawdown"),
    ("dead_letters", "dead letters"),
    ("journal", "journal"),
)


def _format(key: str, value: Any) -> str:
    if key == "pnl":
        return f"{value:,.2f}"
    if key == "max_drawdown":
        return f"{value:.4%}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_summary(summary: dict[str, Any], timings: dict[str, float] | None = None) -> None:
    width = max(len(label) for _, label in SUMMARY_ROWS)
    print()
    for key, label in SUMMARY_ROWS:
        print(f"  {label:<{width}}  {_format(key, summary.get(key, 0))}")
    reasons = summary.get("dead_letter_reasons") or {}
    if reasons:
        detail = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
        print(f"  {'':<{width}}  ({detail})")
    if timings:
        actors = (f"Ray start {timings['ray_start_s']:.2f} s" if "ray_start_s" in timings
                  else "in process, no Ray")
        print(f"  {'replay time':<{width}}  {timings.get('replay_s', 0):.2f} s ({actors})")


def _cmd_replay(args: argparse.Namespace) -> int:
    from engine.runtime import run_replay

    result = run_replay(
        [Path(path) for path in args.tape] if args.tape else None,
        Path(args.config) if args.config else None,
        Path(args.journal) if args.journal else None,
        args.workers,
        symbol_hint=args.symbol,
        progress=not args.no_progress,
        dashboard=args.dashboard,
        metrics_port=args.metrics_port,
        ray_address=args.ray_address,
        venue=args.venue,
        in_process=args.in_process,
    )
    print_summary(result.summary, result.timings)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.synth import synth_from_bars

    summary = synth_from_bars(
        Path(args.bars), Path(args.out), symbol=args.symbol, minutes=args.minutes,
        seed=args.seed, start_minute=args.start_minute,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_synth_ohlc(args: argparse.Namespace) -> int:
    from engine.synth_ohlc import ohlc_tape

    print(json.dumps(ohlc_tape(Path(args.bars), Path(args.out), args.symbol, args.minutes)))
    return 0


def _cmd_synth_from_dex(args: argparse.Namespace) -> int:
    from engine.dex.derived_tape import cex_tape_from_dex

    summary = cex_tape_from_dex(Path(args.dex_tape), Path(args.out), args.symbol)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_import_capture(args: argparse.Namespace) -> int:
    from storage.tape import capture_to_tape

    summary = capture_to_tape([Path(path) for path in args.capture], Path(args.out), args.symbol,
                              venue=args.venue)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_import_klines(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from storage.klines import bars_table, read_klines_csv

    bars = bars_table(read_klines_csv(Path(args.csv)), args.symbol)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(bars, out)
    print(json.dumps({"bars": bars.num_rows, "symbol": args.symbol, "out": str(out)}))
    return 0


def _cmd_import_binance(args: argparse.Namespace) -> int:
    from storage.importers import import_binance_public

    result = import_binance_public([Path(path) for path in args.files], Path(args.out),
                                   symbol=args.symbol, market=args.market, kind=args.kind)
    print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def _cmd_import_tardis(args: argparse.Namespace) -> int:
    from storage.importers import import_tardis

    result = import_tardis([Path(path) for path in args.files], Path(args.out))
    print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def _cmd_import_uniswap(args: argparse.Namespace) -> int:
    from storage.dex_tape import DexPool
    from storage.importers.uniswap_v3 import import_uniswap_v3

    result = import_uniswap_v3([Path(path) for path in args.files], Path(args.out),
                               DexPool.load(args.pool))
    print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from engine.dex.dataset import DexPlanConfig
    from engine.experiment_run import run_experiment

    models = [part.strip() for part in args.models.split(",") if part.strip()]
    config = DexPlanConfig(horizon=args.horizon, decay_per_minute=args.decay,
                           pair_symbol=args.pair)
    summary = run_experiment(Path(args.tape), models, args.target, Path(args.out),
                             seed=args.seed, config=config, parallel=not args.sequential,
                             ray_address=args.ray_address)
    print(json.dumps({"out": args.out, "signals": summary["signals"],
                      "labelled": summary["labelled"], "metrics": summary["metrics"]},
                     indent=2, default=str))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from storage.report import journal_summary

    summary = journal_summary(Path(args.journal), args.initial_equity)
    summary["journal"] = args.journal
    print_summary(summary)
    from engine.cli_research import print_performance
    from storage.performance_report import journal_monte_carlo, journal_performance

    # computed once for the terminal and the HTML file
    performance = journal_performance(Path(args.journal), args.initial_equity)
    carlo = journal_monte_carlo(Path(args.journal), initial_equity=args.initial_equity)
    print_performance(performance, carlo)
    if args.out:
        from storage.html_report import write_html_report

        written = write_html_report(args.journal, args.out, args.walkforward, performance,
                                    carlo, args.initial_equity)
        print(f"\n  report written to {written}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.runtime import run_serve

    return run_serve(args)


def _cmd_bench_replay(args: argparse.Namespace) -> int:
    from engine.bench import bench_replay

    report = bench_replay(
        Path(args.tape), args.strategy, Path(args.config) if args.config else None,
        args.workers, Path(args.out) if args.out else None,
        None if args.learner == "none" else args.learner,
    )
    for key, value in report.items():
        print(f"  {key:<24} {value}")
    print(json.dumps(report))
    return 0


def _cmd_bench_live(args: argparse.Namespace) -> int:
    from engine.bench_live import bench_live

    report = bench_live(
        Path(args.capture), rate=args.rate, frames=args.frames, warmup_s=args.warmup_s,
        config_path=Path(args.config) if args.config else None,
        out=Path(args.out) if args.out else None,
        modes=tuple(args.actors.split(",")),
    )
    for key, value in report.items():
        if isinstance(value, dict) and key in args.actors.split(","):
            print(f"  actors: {key}")
            for name, figure in value.items():
                print(f"    {name:<30} {figure}")
        else:
            print(f"  {key:<32} {value}")
    print(json.dumps(report))
    return 0


def _cmd_risk_scenario(args: argparse.Namespace) -> int:
    from engine.rules.scenario import run_scenario, write_journal

    result = run_scenario(args.scenario)
    if args.journal:
        write_journal(result, args.journal)
    print(f"scenario {result.name} on profile {result.profile}: "
          f"{len(result.decisions)} decisions, {len(result.journal['risk_events'])} risk events")
    for rule, count in result.triggered.items():
        print(f"  {rule:<32} triggered {count}x")
    for problem in result.mismatches + [f"never triggered: {rule}"
                                        for rule in result.missing_rules]:
        print(f"  FAIL {problem}")
    return 0 if result.ok else 1


def _cmd_risk_show(args: argparse.Namespace) -> int:
    from engine.rules.profile import load_profile

    profile = load_profile(args.profile)
    print(f"profile {profile.name}: {profile.description}")
    for rule in profile.build():
        print(f"  [{rule.stage:<5}] {rule!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ats", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser("replay", help="replay a tape or raw captures")
    replay.add_argument("--tape", action="append", metavar="PATH",
                        help="tape directory or raw capture file (repeatable); "
                             "default: the bundled Binance spot sample")
    replay.add_argument("--config", metavar="PATH", help="run config YAML")
    replay.add_argument("--journal", metavar="PATH", help="DuckDB journal to create")
    replay.add_argument("--workers", type=int, default=None, help="Bytewax worker threads")
    replay.add_argument("--symbol", default=None, help="symbol for frames that name none")
    replay.add_argument("--venue", default=None, choices=VENUE_CHOICES,
                        help="parser of raw captures (default: binance, or the venue in a "
                             "cryptofeed capture's file name)")
    replay.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on this port (0: any free port)")
    replay.add_argument("--dashboard", action="store_true", help="start the Ray dashboard")
    replay.add_argument("--in-process", action="store_true",
                        help="run the engine objects in this process instead of Ray actors")
    replay.add_argument("--ray-address", default=None,
                        help="join a running Ray cluster (e.g. 'auto' after `ray start --head`)")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(handler=_cmd_replay)

    synth = commands.add_parser("synth", help="synthetic data").add_subparsers(
        dest="synth_command", required=True
    )
    from_bars = synth.add_parser("from-bars", help="expand 1-minute bars into a trade tape")
    from_bars.add_argument("--bars", required=True, metavar="CSV")
    from_bars.add_argument("--out", required=True, metavar="TAPE")
    from_bars.add_argument("--minutes", type=int, default=None)
    from_bars.add_argument("--start-minute", type=int, default=0)
    from_bars.add_argument("--seed", type=int, default=0)
    from_bars.add_argument("--symbol", default="BTCUSDT")
    from_bars.set_defaults(handler=_cmd_synth)
    ohlc = synth.add_parser("ohlc", help="a light tape: four trades a bar (open, extremes, "
                            "close), for research runs")
    ohlc.add_argument("--bars", required=True, metavar="CSV")
    ohlc.add_argument("--out", required=True, metavar="TAPE")
    ohlc.add_argument("--minutes", type=int, default=None)
    ohlc.add_argument("--symbol", default="BTCUSDT")
    ohlc.set_defaults(handler=_cmd_synth_ohlc)
    from_dex = synth.add_parser(
        "from-dex", help="a CEX trade tape derived from a DEX tape's swaps (marked derived)")
    from_dex.add_argument("--dex-tape", required=True, metavar="DIR",
                          help="a DEX tape (ats import uniswap-v3)")
    from_dex.add_argument("--out", required=True, metavar="TAPE")
    from_dex.add_argument("--symbol", required=True, help="the CEX pair, e.g. ETHUSDT")
    from_dex.set_defaults(handler=_cmd_synth_from_dex)

    importer = commands.add_parser("import", help="import data into tapes").add_subparsers(
        dest="import_command", required=True
    )
    capture = importer.add_parser("capture", help="raw `<ns> <frame>` captures to a tape")
    capture.add_argument("capture", nargs="+", metavar="FILE")
    capture.add_argument("--out", required=True, metavar="TAPE")
    capture.add_argument("--symbol", default=None)
    capture.add_argument("--venue", default=None, choices=VENUE_CHOICES,
                         help="default: binance, or the venue in a cryptofeed file's name")
    capture.set_defaults(handler=_cmd_import_capture)

    klines = importer.add_parser("klines", help="1-minute kline CSV to a Parquet bars table")
    klines.add_argument("--csv", required=True, metavar="CSV")
    klines.add_argument("--out", required=True, metavar="PARQUET")
    klines.add_argument("--symbol", default="BTCUSDT")
    klines.set_defaults(handler=_cmd_import_klines)

    binance = importer.add_parser(
        "binance", help="Binance public-data CSVs (trades, aggTrades, klines) to a tape")
    binance.add_argument("files", nargs="+", metavar="FILE", help=".zip, .csv or .csv.gz")
    binance.add_argument("--out", required=True, metavar="TAPE")
    binance.add_argument("--symbol", default=None, help="default: from each file's name")
    binance.add_argument("--market", choices=("spot", "futures"), default=None,
                         help="checked against each file's layout")
    binance.add_argument("--kind", choices=("trades", "aggTrades", "klines"), default=None,
                         help="for files whose name does not say")
    binance.set_defaults(handler=_cmd_import_binance)

    tardis = importer.add_parser(
        "tardis", help="Tardis CSVs (trades, incremental_book_L2, book_snapshot_N) to a tape")
    tardis.add_argument("files", nargs="+", metavar="FILE", help=".csv.gz, .csv or .zip")
    tardis.add_argument("--out", required=True, metavar="TAPE")
    tardis.set_defaults(handler=_cmd_import_tardis)

    uniswap = importer.add_parser(
        "uniswap-v3", help="Uniswap v3 pool logs (raw eth_getLogs or decoded) to a DEX tape")
    uniswap.add_argument("files", nargs="+", metavar="FILE", help=".csv or .csv.gz")
    uniswap.add_argument("--pool", required=True, metavar="YAML",
                         help="the pool: address, tokens, decimals, base (configs/dex/)")
    uniswap.add_argument("--out", required=True, metavar="DIR")
    uniswap.set_defaults(handler=_cmd_import_uniswap)

    experiment = commands.add_parser(
        "experiment", help="progressive validation of online models on a recorded DEX stream")
    experiment.add_argument("--tape", required=True, help="a DEX tape (ats import uniswap-v3)")
    experiment.add_argument("--models", default="lr,htr,arf",
                            help="comma-separated: lr, htr, arf (or linear, hoeffding_tree, "
                                 "adaptive_forest)")
    experiment.add_argument("--target", default="reward_score")
    experiment.add_argument("--out", required=True, metavar="DIR",
                            help="metrics.csv, predictions.parquet, rolling_error.png, ...")
    experiment.add_argument("--seed", type=int, default=7)
    experiment.add_argument("--horizon", default="20m", help="label horizon T")
    experiment.add_argument("--decay", type=float, default=0.05,
                            help="k of the reward's exp(-k t), per minute")
    experiment.add_argument("--pair", default="ETHUSDT", help="the CEX pair the pool leads")
    experiment.add_argument("--sequential", action="store_true",
                            help="run the models one after the other, without Ray")
    experiment.add_argument("--ray-address", default=None, help="join a running Ray cluster")
    experiment.set_defaults(handler=_cmd_experiment)

    risk = commands.add_parser("risk", help="risk profiles and scenarios").add_subparsers(
        dest="risk_command", required=True
    )
    risk_show = risk.add_parser("show", help="the rules of a risk profile, in decision order")
    risk_show.add_argument("profile", help="bundled profile name (configs/risk/) or YAML path")
    risk_show.set_defaults(handler=_cmd_risk_show)
    risk_scenario = risk.add_parser(
        "scenario", help="replay a risk scenario; exit 1 unless every expected rule triggered")
    risk_scenario.add_argument("scenario",
                               help="bundled scenario (configs/risk/scenarios/) or path")
    risk_scenario.add_argument("--journal", metavar="PATH", help="DuckDB journal to write")
    risk_scenario.set_defaults(handler=_cmd_risk_scenario)

    report = commands.add_parser("report", help="summarise a journal")
    report.add_argument("journal", metavar="JOURNAL")
    report.add_argument("--initial-equity", type=float, default=None,
                        help="default: the run's configured initial equity")
    report.add_argument("--out", default=None, metavar="HTML",
                        help="also write a self-contained HTML report there")
    report.add_argument("--walkforward", default=None, metavar="JSON",
                        help="a walkforward.json whose windows the HTML report shows")
    report.set_defaults(handler=_cmd_report)

    serve = commands.add_parser("serve", help="a loopback Binance exchange replaying captures")
    serve.add_argument("--capture", action="append", required=True, metavar="FILE",
                       help="raw capture (repeatable, in market order)")
    serve.add_argument("--market", choices=("spot", "usdm"), default="spot")
    serve.add_argument("--speed", type=float, default=1.0, help="x recorded speed")
    serve.add_argument("--frames-per-s", type=float, default=None,
                       help="fixed frame rate instead of the recorded timing")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9443, help="websocket port (0: any)")
    serve.add_argument("--rest-port", type=int, default=0, help="REST port (0: any)")
    serve.add_argument("--max-connection-s", type=float, default=86400.0)
    serve.add_argument("--loop", action="store_true", help="replay the captures forever")
    serve.add_argument("--start-now", action="store_true",
                       help="start the timeline at once, not at the first subscription")
    serve.add_argument("--fault-seed", type=int, default=0)
    serve.add_argument("--malformed", type=int, default=0, help="fuzzed frames to interleave")
    serve.add_argument("--depth-gaps", type=int, default=0)
    serve.add_argument("--duplicates", type=int, default=0)
    serve.add_argument("--reordered-pairs", type=int, default=0)
    serve.add_argument("--drop-at", type=float, action="append", metavar="S",
                       help="abort every connection at this stream second (repeatable)")
    serve.add_argument("--silence", action="append", metavar="START:DURATION",
                       help="send nothing for DURATION stream seconds from START (repeatable)")
    serve.set_defaults(handler=_cmd_serve)

    from engine.cli_live import add_live_commands

    add_live_commands(commands)

    from engine.control.cli import add_control_command

    add_control_command(commands)

    from engine.cli_research import (
        add_journal_commands,
        add_research_benches,
        add_walkforward_command,
    )

    add_journal_commands(commands)
    add_walkforward_command(commands)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
    bench_replay = bench.add_parser("replay", help="ATS end to end vs a NumPy reference")
    bench_replay.add_argument("--tape", required=True, metavar="PATH")
    bench_replay.add_argument("--strategy", default="ema_cross")
    bench_replay.add_argument("--config", default=None, metavar="PATH")
    bench_replay.add_argument("--workers", type=int, default=1)
    bench_replay.add_argument("--out", default="benchmarks/replay.json", metavar="FILE")
    bench_replay.add_argument("--learner", default="linear",
                              help="also run with this online learner per symbol and report its "
                                   "overhead (lr, htr, arf; 'none' skips)")
    bench_replay.set_defaults(handler=_cmd_bench_replay)
    bench_live = bench.add_parser("live", help="live latency vs a bare websocket loop")
    bench_live.add_argument("--capture", default="data/binance-spot/btcusdt_20240808.gz")
    bench_live.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    bench_live.add_argument("--frames", type=int, default=30_000)
    bench_live.add_argument("--actors", default="ray,in_process",
                            help="actor modes to measure, in turn (ray, in_process)")
    bench_live.add_argument("--warmup-s", type=float, default=3.0)
    bench_live.add_argument("--config", default=None, metavar="PATH")
    bench_live.add_argument("--out", default="benchmarks/live.json", metavar="FILE")
    bench_live.set_defaults(handler=_cmd_bench_live)
    add_research_benches(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from engine.config import ConfigError

    try:
        return int(args.handler(args))
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"ats: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
