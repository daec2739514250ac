"""What the operator decided, as one persisted object: `ControlState`.

Applying a command is a pure function (`apply_command`), so a state can be tested, journaled
and replayed without an engine. The state lives in one JSON file written atomically (temporary
file in the same directory, fsync, rename, as `engine.execution.state_file` does), and every
change is written *before* the engine acts on it: a crash between the two leaves the command in
force for the next start, never lost. "Stays in force across a restart" means a fresh engine
loading the file is paused, halted, blacklisted and limited the same way, and re-issues every
exit request that was not yet seen settled.

Fail closed: a file that exists but cannot be read, or holds values outside the vocabulary's
limits, loads as HALTED with a reason naming the file (never as an empty, permissive state).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from engine.control.commands import (
    MAX_RISK_PCT,
    Blacklist,
    CloseAll,
    ClosePosition,
    CommandError,
    ControlCommand,
    ForceExit,
    Kill,
    Pause,
    ResetHalt,
    Resume,
    SetMaxRisk,
    Status,
    Unblacklist,
    parse_name,
)

FORMAT_VERSION = 1
ExitKind = Literal["close_all", "close_position", "force_exit", "kill"]
# Quote currencies recognised when a base asset (BTC) is matched against a symbol (BTCUSDT).
KNOWN_QUOTES: tuple[str, ...] = (
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "DAI", "EUR", "GBP", "TRY", "BRL", "JPY",
    "BTC", "ETH", "BNB",
)


def _compact(name: str) -> str:
    """`BTC/USDT:USDT` -> `BTCUSDT`: the ccxt unified form compared with the exchange form."""
    return name.upper().split(":", 1)[0].replace("/", "")


def base_asset(symbol: str) -> str | None:
    """The base asset of a symbol (`BTCUSDT`, `BTC/USDT:USDT`, `UNIUSD-SWAP`), None if unknown."""
    upper = symbol.upper()
    if "/" in upper:
        return upper.split("/", 1)[0]
    core = upper.split("-", 1)[0]
    for quote in sorted(KNOWN_QUOTES, key=len, reverse=True):
        if core.endswith(quote) and len(core) > len(quote):
            return core[: -len(quote)]
    return None


def asset_matches(asset: str, symbol: str) -> bool:
    """True when `asset` (a symbol or a base asset) names `symbol`.

    >>> asset_matches("BTC", "BTCUSDT"), asset_matches("BTCUSDT", "BTC/USDT:USDT")
    (True, True)
    >>> asset_matches("BTC", "ETHBTC"), asset_matches("ETH", "ETHUSDT")
    (False, True)
    """
    upper = asset.upper()
    if _compact(upper) == _compact(symbol):
        return True
    return base_asset(symbol) == upper


@dataclass(frozen=True)
class ExitRequest:
    """A close the operator asked for; outstanding until risk sees its targets flat."""

    request_id: int
    kind: ExitKind
    target: str  # "*" for every position, else a symbol (close_position) or an asset
    reason: str

    def covers(self, symbol: str) -> bool:
        return self.target == "*" or asset_matches(self.target, symbol)


@dataclass(frozen=True)
class ControlState:
    """The operator's standing orders to the engine (see module docs)."""

    paused: bool = False
    halted: bool = False
    halt_reason: str = ""
    max_risk_fraction: float | None = None  # risk per trade as a fraction of equity
    blacklist: tuple[str, ...] = ()
    exits: tuple[ExitRequest, ...] = ()
    next_request_id: int = 1
    resets: int = 0  # reset-halt commands applied: the engine clears its halt when this grows

    def blacklisted(self, symbol: str) -> str | None:
        """The blacklist entry that covers `symbol`, or None."""
        for asset in self.blacklist:
            if asset_matches(asset, symbol):
                return asset
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "paused": self.paused,
            "halted": self.halted,
            "halt_reason": self.halt_reason,
            "max_risk_fraction": self.max_risk_fraction,
            "blacklist": list(self.blacklist),
            "exits": [{"request_id": r.request_id, "kind": r.kind, "target": r.target,
                       "reason": r.reason} for r in self.exits],
            "next_request_id": self.next_request_id,
            "resets": self.resets,
        }


@dataclass(frozen=True)
class Applied:
    """The outcome of one command on a state: `changed` False when it was already so."""

    state: ControlState
    changed: bool
    message: str


def _with_exit(state: ControlState, kind: ExitKind, target: str, reason: str) -> ControlState:
    request = ExitRequest(state.next_request_id, kind, target, reason)
    return replace(state, exits=(*state.exits, request), next_request_id=request.request_id + 1)


def apply_command(state: ControlState, command: ControlCommand) -> Applied:
    """The state after `command`; pure, never touches a file or an engine."""
    if isinstance(command, Status):
        return Applied(state, False, "status")
    if isinstance(command, Pause):
        return Applied(replace(state, paused=True), not state.paused, "entries paused")
    if isinstance(command, Resume):
        note = (f"; still HALTED ({state.halt_reason}): only reset-halt clears it"
                if state.halted else "")
        return Applied(replace(state, paused=False), state.paused, f"entries resumed{note}")
    if isinstance(command, CloseAll):
        return Applied(_with_exit(state, "close_all", "*", "operator close-all"), True,
                       "closing every position")
    if isinstance(command, ClosePosition):
        target = command.position_id
        return Applied(_with_exit(state, "close_position", target, f"operator close {target}"),
                       True, f"closing position {target}")
    if isinstance(command, SetMaxRisk):
        fraction = command.fraction
        message = ("risk per trade override removed" if fraction is None
                   else f"risk per trade capped at {fraction:.4%} of equity")
        return Applied(replace(state, max_risk_fraction=fraction),
                       fraction != state.max_risk_fraction, message)
    if isinstance(command, Blacklist | ForceExit):
        asset = command.asset
        listed = asset in state.blacklist
        blacklist = state.blacklist if listed else tuple(sorted((*state.blacklist, asset)))
        new = replace(state, blacklist=blacklist)
        if isinstance(command, Blacklist):
            return Applied(new, not listed, f"{asset} blacklisted: no new entries")
        new = _with_exit(new, "force_exit", asset, f"operator force-exit {asset}")
        return Applied(new, True, f"{asset} blacklisted and its positions closing")
    if isinstance(command, Unblacklist):
        asset = command.asset
        if asset not in state.blacklist:
            return Applied(state, False, f"{asset} was not blacklisted")
        blacklist = tuple(name for name in state.blacklist if name != asset)
        return Applied(replace(state, blacklist=blacklist), True, f"{asset} allowed again")
    if isinstance(command, Kill):
        halted = replace(state, halted=True, halt_reason=command.reason)
        return Applied(_with_exit(halted, "kill", "*", f"kill: {command.reason}"), True,
                       f"HALTED ({command.reason}): cancel all and flatten")
    if isinstance(command, ResetHalt):
        if not state.halted:
            # still counted: it also clears halts and suspensions that risk rules set
            return Applied(replace(state, resets=state.resets + 1), False,
                           "not halted by the operator; risk halts and suspensions cleared")
        return Applied(replace(state, halted=False, halt_reason="", resets=state.resets + 1),
                       True, "HALTED cleared; entries allowed unless paused")
    raise CommandError(f"command {command!r} has no effect defined")


def settle(state: ControlState, request_ids: Iterable[int]) -> ControlState:
    """The state without the exit requests that risk reported done."""
    done = set(request_ids)
    if not done:
        return state
    return replace(state, exits=tuple(r for r in state.exits if r.request_id not in done))


# ---------------------------------------------------------------- the file


def _state_from_json(data: Any) -> ControlState:
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise ValueError("not a control state of format 1")
    fraction = data["max_risk_fraction"]
    if fraction is not None:
        fraction = float(fraction)
        if not (math.isfinite(fraction) and 0 < fraction <= MAX_RISK_PCT / 100.0):
            raise ValueError("max_risk_fraction out of range")
    exits = []
    for item in data["exits"]:
        kind = str(item["kind"])
        if kind not in ("close_all", "close_position", "force_exit", "kill"):
            raise ValueError("unknown exit kind")
        target = str(item["target"])
        exits.append(ExitRequest(int(item["request_id"]), kind,  # type: ignore[arg-type]
                                 target if target == "*" else parse_name(target, "target"),
                                 str(item["reason"])))
    paused, halted = data["paused"], data["halted"]
    if not (isinstance(paused, bool) and isinstance(halted, bool)):
        raise ValueError("paused and halted must be booleans")
    return ControlState(
        paused=paused, halted=halted, halt_reason=str(data["halt_reason"]),
        max_risk_fraction=fraction,
        blacklist=tuple(sorted(parse_name(str(name), "blacklist entry")
                               for name in data["blacklist"])),
        exits=tuple(exits), next_request_id=int(data["next_request_id"]),
        resets=int(data["resets"]),
    )


def load_control_state(path: Path) -> ControlState:
    """The persisted state; a missing file is the empty state, an unreadable one HALTED."""
    if not path.exists():
        return ControlState()
    try:
        return _state_from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return ControlState(halted=True, halt_reason=(
            f"control state file {path.name} unreadable ({type(error).__name__}); fix or remove "
            "it, then reset-halt"))


def save_control_state(path: Path, state: ControlState) -> None:
    """Write atomically: a crash leaves the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(state.to_json(), handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
