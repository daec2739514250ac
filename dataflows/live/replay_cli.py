"""`ats serve`: run the loopback replay exchange from the command line until Ctrl-C.

The server prints its websocket and REST URLs (and the `ats live --paper` options that point a
live run at it), starts the timeline when the first client subscribes (or at once with
`--start-now`), keeps serving REST after the timeline ends, and on Ctrl-C or SIGTERM closes every
socket and prints what it did: connections, frames played and sent, faults injected.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from dataflows.live.replay_faults import FaultPlan
from dataflows.live.replay_server import ReplayServer


def parse_silence(text: str) -> tuple[float, float]:
    """`START:DURATION` in stream seconds, e.g. `120:45`."""
    start, sep, duration = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(start), float(duration)
    except ValueError:
        raise ValueError(
            f"--silence {text!r}: expected START:DURATION in stream seconds, e.g. 120:45"
        ) from None


def server_from_args(args: argparse.Namespace) -> ReplayServer:
    """The server the command line describes (errors name the option at fault)."""
    plan = FaultPlan(
        seed=args.fault_seed,
        drop_connections_at_s=tuple(args.drop_at or ()),
        silences=tuple(parse_silence(text) for text in args.silence or ()),
        malformed_frames=args.malformed,
        depth_gaps=args.depth_gaps,
        duplicate_frames=args.duplicates,
        reordered_pairs=args.reordered_pairs,
    )
    return ReplayServer(
        [Path(path) for path in args.capture], market=args.market, speed=args.speed,
        frames_per_s=args.frames_per_s, host=args.host, port=args.port,
        rest_port=args.rest_port, faults=plan, max_connection_s=args.max_connection_s,
        loop_playback=args.loop,
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or SIGTERM); 0 on a clean stop."""
    server = server_from_args(args)
    venue = "binance-usdm" if server.market == "usdm" else "binance"
    prefix = "/fapi/v1" if server.market == "usdm" else "/api/v3"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with ExitStack() as stack:
        try:
            stack.enter_context(server.running())
        except OSError as error:
            raise ValueError(f"cannot listen on {args.host} (websocket port {args.port}, REST "
                             f"port {args.rest_port}): {error}") from error
        print(f"websocket  {server.ws_url}/stream?streams={'/'.join(server.streams)}",
              flush=True)
        print(f"REST       {server.rest_url}{prefix}/depth?symbol={server.loaded.symbols[0]}",
              flush=True)
        symbols = ",".join(server.loaded.symbols)
        kinds = ",".join(dict.fromkeys(stream.partition("@")[2] for stream in server.streams))
        print(f"live run   ats live --paper --venue {venue} --symbols {symbols} --streams "
              f"{kinds} --ws-url {server.ws_url} --rest-url {server.rest_url}", flush=True)
        for problem in server.problems[:5]:
            print(f"capture    {problem}", file=sys.stderr)
        server.start(wait_for_subscriber=not args.start_now)
        when = "started" if args.start_now else "starts when the first client subscribes"
        print(f"timeline   {when}; Ctrl-C to stop", flush=True)
        announced = False
        try:
            while True:
                if announced:
                    time.sleep(0.5)  # finished: wait for Ctrl-C without spinning
                elif server.finished.wait(0.5):
                    announced = True
                    server.wait_finished(0)
                    print("timeline   finished; REST still answers; Ctrl-C to stop", flush=True)
        except KeyboardInterrupt:
            pass
        stats = server.stats
    faults = Counter(record.kind for record in server.fault_log)
    print(f"\n  connections   {stats.connections_total}\n"
          f"  frames played {stats.frames_played:,}\n"
          f"  frames sent   {sum(stats.frames_sent.values()):,}\n"
          f"  REST requests {sum(stats.requests.values()):,}\n"
          f"  faults        {dict(faults) or 'none'}", flush=True)
    return 0
