"""The operator's command vocabulary for a running engine, parsed and validated.

Each command is a small frozen object; `parse_command(words)` turns the words of
`ats control VERB [ARGUMENT...]` into one, with an error naming the bad argument:

| verb | argument | effect |
|---|---|---|
| `pause` | - | no new entries until `resume`; exits and open positions are untouched |
| `resume` | - | entries allowed again (does not clear a halt) |
| `close-all` | - | flatten every position once; entries stay allowed |
| `close-position` | ID | flatten one position; its id is the symbol risk holds it under |
| `set-max-risk` | PCT or `off` | cap the risk per trade at PCT percent of equity |
| `blacklist` / `unblacklist` | ASSET | refuse / allow entries on an asset |
| `force-exit` | ASSET | blacklist the asset and flatten every position on it |
| `kill` | [REASON...] | HALTED (persisted): cancel all, flatten, no entries |
| `reset-halt` | - | the only way to clear HALTED |
| `status` | - | the control state, changing nothing |

`set-max-risk` always reads a percentage: `0.5` and `0.5%` both mean 0.5% of equity, at most
`MAX_RISK_PCT`. A fraction typed by mistake (`0.01` meant as 1%) reads as 0.01%, the safe side.
An ASSET is a symbol (`BTCUSDT`, `BTC/USDT:USDT`) or a base asset (`BTC`), matched by
`engine.control.state.asset_matches`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_RISK_PCT = 5.0  # percent of equity per trade; more is never a sane manual override
MAX_REASON_CHARS = 200
_NAME = re.compile(r"^[A-Z0-9][A-Z0-9._]{0,29}([/:\-][A-Z0-9._]{1,20}){0,3}$")


class CommandError(ValueError):
    """A command that cannot be parsed or has a bad argument; the message names it."""


@dataclass(frozen=True)
class ControlCommand:
    """Base of every command: `verb` is its name on the command line."""

    verb: ClassVar[str] = ""

    @property
    def argument(self) -> str:
        """The argument as the journal shows it ("" when there is none)."""
        return ""

    @property
    def changes_state(self) -> bool:
        return True

    def words(self) -> list[str]:
        """The command line words that parse back into this command."""
        return [self.verb, self.argument] if self.argument else [self.verb]


@dataclass(frozen=True)
class Pause(ControlCommand):
    verb: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(ControlCommand):
    verb: ClassVar[str] = "resume"


@dataclass(frozen=True)
class CloseAll(ControlCommand):
    verb: ClassVar[str] = "close-all"


@dataclass(frozen=True)
class ClosePosition(ControlCommand):
    verb: ClassVar[str] = "close-position"
    position_id: str = ""

    @property
    def argument(self) -> str:
        return self.position_id


@dataclass(frozen=True)
class SetMaxRisk(ControlCommand):
    """`fraction` is of equity (0.005 for `set-max-risk 0.5`); None removes the override."""

    verb: ClassVar[str] = "set-max-risk"
    fraction: float | None = None

    @property
    def argument(self) -> str:
        return "off" if self.fraction is None else f"{self.fraction * 100:g}%"


@dataclass(frozen=True)
class Blacklist(ControlCommand):
    verb: ClassVar[str] = "blacklist"
    asset: str = ""

    @property
    def argument(self) -> str:
        return self.asset


@dataclass(frozen=True)
class Unblacklist(ControlCommand):
    verb: ClassVar[str] = "unblacklist"
    asset: str = ""

    @property
    def argument(self) -> str:
        return self.asset


@dataclass(frozen=True)
class ForceExit(ControlCommand):
    verb: ClassVar[str] = "force-exit"
    asset: str = ""

    @property
    def argument(self) -> str:
        return self.asset


@dataclass(frozen=True)
class Kill(ControlCommand):
    verb: ClassVar[str] = "kill"
    reason: str = "kill switch"

    @property
    def argument(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ResetHalt(ControlCommand):
    verb: ClassVar[str] = "reset-halt"


@dataclass(frozen=True)
class Status(ControlCommand):
    verb: ClassVar[str] = "status"

    @property
    def changes_state(self) -> bool:
        return False


_NO_ARGUMENT: dict[str, type[ControlCommand]] = {
    command.verb: command for command in (Pause, Resume, CloseAll, ResetHalt, Status)
}
_NAMED: dict[str, Callable[[str], ControlCommand]] = {
    "close-position": ClosePosition, "blacklist": Blacklist, "unblacklist": Unblacklist,
    "force-exit": ForceExit,
}
VERBS: tuple[str, ...] = (
    "pause", "resume", "close-all", "close-position", "set-max-risk", "blacklist",
    "unblacklist", "force-exit", "kill", "reset-halt", "status",
)


def parse_name(text: str, what: str) -> str:
    """An asset, symbol or position id: upper-cased, letters, digits and `/ : - . _` only."""
    name = text.strip().upper()
    if not _NAME.match(name):
        raise CommandError(
            f"{what} {text!r} is not a symbol or asset name (letters, digits, '/', ':', '-', "
            "'.', '_'; e.g. BTC, BTCUSDT, BTC/USDT:USDT)")
    return name


def parse_percent(text: str) -> float | None:
    """`set-max-risk` argument: a percentage of equity (`0.5` or `0.5%`) as a fraction, or None
    for `off`."""
    cleaned = text.strip().lower()
    if cleaned in ("off", "none", "clear"):
        return None
    number = cleaned[:-1].strip() if cleaned.endswith("%") else cleaned
    try:
        percent = float(number)
    except ValueError:
        raise CommandError(f"set-max-risk PCT {text!r} is not a number (e.g. 0.5 for 0.5% of "
                           "equity, or 'off')") from None
    if not (math.isfinite(percent) and 0 < percent <= MAX_RISK_PCT):
        raise CommandError(f"set-max-risk PCT {text!r} must be a percentage of equity in "
                           f"(0, {MAX_RISK_PCT:g}]")
    return percent / 100.0


def _reason(words: Sequence[str]) -> str:
    reason = " ".join(word.strip() for word in words if word.strip()) or "kill switch"
    if len(reason) > MAX_REASON_CHARS:
        raise CommandError(f"kill REASON is {len(reason)} characters; at most {MAX_REASON_CHARS}")
    if any(not character.isprintable() for character in reason):
        raise CommandError("kill REASON contains control characters")
    return reason


def parse_command(words: Sequence[str]) -> ControlCommand:
    """`["set-max-risk", "0.5"]` -> `SetMaxRisk(0.005)`; raises CommandError naming the problem."""
    if not words or not str(words[0]).strip():
        raise CommandError(f"no command given; one of: {', '.join(VERBS)}")
    verb = str(words[0]).strip().lower()
    rest = [str(word) for word in words[1:]]
    if verb == "kill":
        return Kill(_reason(rest))
    if verb in _NO_ARGUMENT:
        if rest:
            raise CommandError(f"{verb} takes no argument, got {' '.join(rest)!r}")
        return _NO_ARGUMENT[verb]()
    if verb in _NAMED or verb == "set-max-risk":
        label = {"close-position": "ID", "set-max-risk": "PCT"}.get(verb, "ASSET")
        if len(rest) != 1:
            raise CommandError(f"{verb} takes exactly one {label}, got {len(rest)} arguments")
        if verb == "set-max-risk":
            return SetMaxRisk(parse_percent(rest[0]))
        return _NAMED[verb](parse_name(rest[0], f"{verb} {label}"))
    raise CommandError(f"unknown command {verb!r}; one of: {', '.join(VERBS)}")


def command_from_json(data: Mapping[str, Any]) -> ControlCommand:
    """The channel's request body `{"command": [words...]}` -> a command."""
    words = data.get("command")
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise CommandError("request field 'command' must be a list of strings")
    return parse_command(words)
