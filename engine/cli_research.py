"""`ats journal ...` and `ats bench montecarlo`: working with a finished run's journal."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_sql(args: argparse.Namespace) -> int:
    from storage.journal_tools import query

    names, rows = query(Path(args.journal), args.sql)
    if names:
        print("\t".join(names))
    for row in rows:
        print("\t".join("" if value is None else str(value) for value in row))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from storage.journal_tools import export

    for path in export(Path(args.journal), Path(args.out), args.format):
        print(path)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    """Prints the comparison; exits 1 when the journals differ (like `diff`)."""
    from storage.journal_tools import diff

    report = diff(Path(args.a), Path(args.b))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(format_diff(report, args.limit))
    return 0 if report["identical"] else 1


def format_diff(report: dict[str, Any], limit: int = 10) -> str:
    """The terminal summary of `storage.journal_tools.diff`."""
    if report["identical"]:
        return "identical: every signal and fill matches, and so does the P&L"
    lines = [f"the journals part at ts_event {report['first_difference_ts']}"]
    for name, table in report["tables"].items():
        lines.append(f"{name}: {table['matched']} matched, {len(table['changed'])} changed, "
                     f"{len(table['only_a'])} only in A, {len(table['only_b'])} only in B")
        for change in table["changed"][:limit]:
            values = ", ".join(f"{field} {a} -> {b}" for field, (a, b) in
                               change["changes"].items())
            lines.append(f"  changed {change['at']}: {values}")
        for side in ("only_a", "only_b"):
            for row in table[side][:limit]:
                lines.append(f"  {side.replace('_', ' in ').upper()[:9]}: {row}")
    for name, values in report["pnl"].items():
        lines.append(f"{name}: A {values['a']:.2f}, B {values['b']:.2f} "
                     f"(B - A {values['difference']:+.2f})")
    return "\n".join(lines)


def print_performance(performance: dict[str, Any], carlo: dict[str, Any]) -> None:
    """`storage.performance_report`'s metrics and Monte Carlo under the run summary."""
    from engine.analytics.performance import METRIC_ROWS

    metrics = performance["metrics"]
    width = max(len(label) for _, label, _ in METRIC_ROWS)
    print()
    for key, label, kind in METRIC_ROWS:
        value = metrics.get(key, float("nan"))
        text = f"{value:.2%}" if kind == "pct" else f"{value:.3f}"
        print(f"  {label:<{width}}  {'n/a' if value != value else text}")
    print(f"  {'benchmark':<{width}}  {performance['benchmark']}")
    if "skipped" in carlo:
        print(f"  {'Monte Carlo':<{width}}  {carlo['skipped']}")
        return
    for method, result in carlo.items():
        returns, drawdown = result["total_return"], result["max_drawdown"]
        print(f"  {'Monte Carlo, ' + method:<{width}}  {result['simulations']:,} runs of "
              f"{result['trades']} trades: return p5/p50/p95 {returns['p5']:.2%} / "
              f"{returns['p50']:.2%} / {returns['p95']:.2%}; max drawdown p95 "
              f"{drawdown['p95']:.2%}; {result['verdict']}")


def parse_param(text: str) -> tuple[str, list[Any]]:
    """`key=v1,v2,...` with numbers as numbers: ("strategy.donchian_period", [10, 20])."""
    key, separator, values = text.partition("=")
    if not separator or not key or not values:
        raise ValueError(f"--param {text!r}: write key=value1,value2 (dotted config key)")
    parsed: list[Any] = []
    for value in values.split(","):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            parsed.append(lowered == "true")
            continue
        for kind in (int, float):
            try:
                parsed.append(kind(value))
                break
            except ValueError:
                continue
        else:
            parsed.append(value.strip())
    return key.strip(), parsed


def _cmd_walkforward(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.walk_forward_run import run_walk_forward

    params = dict(parse_param(text) for text in args.param)
    report = run_walk_forward(
        Path(args.tape), load_config(args.config), params, in_sample=args.in_sample,
        out_of_sample=args.out_of_sample, step=args.step, search=args.search,
        samples=args.samples, seed=args.seed, min_ratio=args.min_ratio,
        parallel=not args.sequential, out=Path(args.out) if args.out else None)
    for row in report["windows"]:
        print(f"  window {row['window']:>2}  best {row['best']:<50}  in-sample Sharpe "
              f"{row['in_sample_sharpe']:8.2f}  out-of-sample {row['out_of_sample_sharpe']:8.2f}"
              f"  {'pass' if row['passed'] else 'FAIL'}")
    verdict = "accepted" if report["accepted"] else "rejected"
    print(f"  {verdict}: {report['passed_windows']} of {len(report['windows'])} windows hold "
          f"{report['min_ratio']:.0%} of their in-sample Sharpe out of sample")
    return 0


def add_walkforward_command(commands: Any) -> None:
    parser = commands.add_parser("walkforward", help="walk-forward validation of parameters "
                                 "on a tape, candidates as parallel Ray tasks")
    parser.add_argument("--tape", required=True, metavar="PATH")
    parser.add_argument("--config", required=True, metavar="PATH")
    parser.add_argument("--param", action="append", required=True, metavar="KEY=V1,V2",
                        help="a dotted config key and its values (repeatable)")
    parser.add_argument("--in-sample", default="6d")
    parser.add_argument("--out-of-sample", default="2d")
    parser.add_argument("--step", default="2d")
    parser.add_argument("--search", choices=("grid", "random", "bayesian"), default="grid")
    parser.add_argument("--samples", type=int, default=10,
                        help="random: candidates; bayesian: trials per window")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-ratio", type=float, default=0.7)
    parser.add_argument("--sequential", action="store_true", help="no Ray: one after another")
    parser.add_argument("--out", default=None, metavar="DIR", help="writes walkforward.json")
    parser.set_defaults(handler=_cmd_walkforward)


def _cmd_bench_montecarlo(args: argparse.Namespace) -> int:
    from engine.bench import bench_montecarlo

    report = bench_montecarlo(Path(args.out) if args.out else None, args.simulations,
                              args.trades)
    for key, value in report.items():
        print(f"  {key:<26} {value}")
    return 0


def add_journal_commands(commands: Any) -> None:
    journal = commands.add_parser("journal", help="query, export and compare journals"
                                  ).add_subparsers(dest="journal_command", required=True)
    sql = journal.add_parser("sql", help="run SQL on a journal (read-only)")
    sql.add_argument("journal")
    sql.add_argument("sql")
    sql.set_defaults(handler=_cmd_sql)
    exporter = journal.add_parser("export", help="tables as CSV or Parquet, or a tax CSV")
    exporter.add_argument("journal")
    exporter.add_argument("--format", choices=("csv", "parquet", "tax"), default="csv")
    exporter.add_argument("--out", required=True, metavar="DIR")
    exporter.set_defaults(handler=_cmd_export)
    differ = journal.add_parser("diff", help="two journals of one stream, signal by signal, "
                                "fill by fill and in P&L (exit 1 if they differ)")
    differ.add_argument("a")
    differ.add_argument("b")
    differ.add_argument("--limit", type=int, default=10, help="rows shown per kind")
    differ.add_argument("--json", action="store_true")
    differ.set_defaults(handler=_cmd_diff)


def _cmd_bench_research(args: argparse.Namespace) -> int:
    from engine.bench import bench_research

    report = bench_research(Path(args.bars), Path(args.out) if args.out else None)
    for key, value in report.items():
        print(f"  {key:<26} {value}")
    return 0


def add_research_benches(bench: Any) -> None:
    parser = bench.add_parser("montecarlo", help="Monte Carlo of trade returns, both methods")
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--trades", type=int, default=1_000)
    parser.add_argument("--out", default="benchmarks/montecarlo.json", metavar="FILE")
    parser.set_defaults(handler=_cmd_bench_montecarlo)
    research = bench.add_parser("research", help="walk-forward and Monte Carlo of the breakout "
                                "plan on the bundled klines, timed")
    research.add_argument("--bars", default="data/binance-1m/BTCUSDT_1m.csv", metavar="CSV")
    research.add_argument("--out", default="benchmarks/research.json", metavar="FILE")
    research.set_defaults(handler=_cmd_bench_research)
