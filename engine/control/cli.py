"""`ats control VERB [ARGUMENT...]`: one operator command to a running engine's channel.

The command is parsed here first (a typo never reaches the engine), then sent with the token of
ATS_CONTROL_TOKEN and the operator's name (`--who`, default the OS user). The answer (result,
message and the control state) is printed as JSON. Exit status: 0 applied or unchanged, 1
refused or failed by the engine, 2 for a bad command, a missing token or no engine answering.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.control.commands import VERBS, parse_command


def default_url(config_path: str | None) -> str:
    """http://<control.host>:<control.port> of the run config (the defaults without one)."""
    from engine.config import RunConfig, load_config

    config = load_config(Path(config_path)) if config_path else RunConfig()
    return f"http://{config.control.host}:{config.control.port}"


def _cmd_control(args: argparse.Namespace) -> int:
    from engine.control.channel import (
        ControlChannelError,
        default_who,
        send_command,
        token_from_env,
    )

    command = parse_command(args.words)
    url = args.url or default_url(args.config)
    try:
        token = token_from_env()
        status, answer = send_command(url, command.words(), args.who or default_who(), token,
                                      args.timeout)
    except ControlChannelError as error:
        print(f"ats control: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2, sort_keys=True))
    if status == 200 and answer.get("result") in ("applied", "unchanged"):
        return 0
    print(f"ats control: {command.verb}: {answer.get('result', 'failed')}: "
          f"{answer.get('error') or answer.get('message', '')}", file=sys.stderr)
    return 1


def add_control_command(commands: Any) -> None:
    """Register `control` on the `ats` sub-command parser."""
    control = commands.add_parser(
        "control", help="operator command to a running engine (pause, kill, ...)",
        description=f"Commands: {', '.join(VERBS)}. set-max-risk takes a percentage of equity "
        "(0.5 = 0.5%) or 'off'. The token comes from ATS_CONTROL_TOKEN.")
    control.add_argument("--url", default=None,
                         help="the engine's channel (default: control.host/port of --config, "
                              "else http://127.0.0.1:8787)")
    control.add_argument("--config", metavar="PATH", help="run config YAML (its `control:`)")
    control.add_argument("--who", default=None, help="operator name (default: the OS user)")
    control.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    control.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND",
                         help="e.g. pause | set-max-risk 0.5 | blacklist DOGE | kill fat finger")
    control.set_defaults(handler=_cmd_control)
