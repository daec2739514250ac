"""`Controller`: applies operator commands to the persisted state, risk and live execution, and
journals each one with who, when and what came of it.

Order of work for a command, failing closed:
1. the new `ControlState` is computed (pure) and written to the state file *first*, so the
   command is in force after a crash or restart even if the engine never saw it; when the file
   cannot be written, a command that only tightens (pause, blacklist, closes, kill) still
   applies (reported "failed": not persisted) and one that loosens is refused;
2. risk takes it (`apply_control` on a PortfolioRisk or its actor): gates, caps, the halt, a
   reset, and flatten actions for new exit requests; exit requests whose targets are already
   flat are settled and removed from the file;
3. `kill` also calls the live execution's `kill` (cancel all, flatten, HALTED persisted in the
   execution state file) where one is wired, `reset-halt` its `reset_halt`.

A failure in 2 or 3 is reported (result "failed", with the error's type and message) and
journaled; the persisted state stays, so a restart applies it again. `refresh()` re-applies the
state (the channel calls it periodically) so exit requests are settled once positions are flat.
Rows go to the `control_events` journal table through the `journal` callable; the token of the
channel never reaches this class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from engine.control.commands import (
    Blacklist,
    CloseAll,
    ClosePosition,
    ControlCommand,
    ForceExit,
    Kill,
    Pause,
    ResetHalt,
)
from engine.control.state import (
    ControlState,
    apply_command,
    load_control_state,
    save_control_state,
    settle,
)
from engine.rules.control import ControlEffect

log = logging.getLogger(__name__)
# Commands that only tighten: applied in memory even when the state file cannot be written.
_RESTRICTIVE = (Pause, CloseAll, ClosePosition, Blacklist, ForceExit, Kill)
JournalSink = Callable[[list[dict[str, Any]]], None]


class RiskTarget(Protocol):
    """PortfolioRisk, or an adapter calling its actor."""

    def apply_control(self, state: ControlState) -> ControlEffect: ...


class ExecutionTarget(Protocol):
    """LiveExecution, or an adapter calling its actor."""

    def kill(self, reason: str = ...) -> Any: ...

    def reset_halt(self) -> None: ...


class Controller:
    """The engine side of manual control (see module docs). Thread-safe (one lock)."""

    def __init__(self, state_file: Path, risk: RiskTarget | None = None,
                 execution: ExecutionTarget | None = None, journal: JournalSink | None = None,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.state_file = Path(state_file)
        self.risk = risk
        self.execution = execution
        self.journal = journal
        self.wall_clock_ns = wall_clock_ns
        self._lock = threading.RLock()
        self._sequence = 0
        self._instance = f"{time.time_ns():x}"  # keys of two controllers never collide
        self.state = load_control_state(self.state_file)
        self.last_effect: ControlEffect | None = None
        if self.state.halted:
            log.warning("control state loaded HALTED: %s", self.state.halt_reason)

    def __repr__(self) -> str:
        return f"Controller(state_file={self.state_file.name!r}, halted={self.state.halted})"

    # ---------------------------------------------------------------- applying

    def start(self) -> dict[str, Any]:
        """Apply the persisted state to risk (and a persisted HALT to execution) at start-up."""
        with self._lock:
            detail = self._push()
            if self.state.halted and self.execution is not None:
                detail = self._call_execution(lambda target: target.kill(self.state.halt_reason),
                                              detail)
            self._record("engine", "start", "", "applied" if not detail else "failed",
                         detail or "persisted control state applied")
            return self.status()

    def refresh(self) -> None:
        """Re-apply the state: settles exit requests whose positions are now flat, and persists
        a halt that risk took on its own (a rule's kill switch), so it holds after a restart
        until `reset-halt`."""
        with self._lock:
            before = self.state.exits
            error = self._push()
            if error:
                log.warning("control refresh failed: %s", error)
                return
            if self.state.exits != before:
                log.info("control: exit requests settled, %d outstanding", len(self.state.exits))
            self._persist_risk_halt()

    def _persist_risk_halt(self) -> None:
        effect = self.last_effect
        if effect is None or not effect.halted or self.state.halted:
            return
        reason = f"risk halted: {effect.halt_reason}"
        halted = replace(self.state, halted=True, halt_reason=reason)
        try:
            save_control_state(self.state_file, halted)
        except OSError as error:  # risk stays halted in memory; retried on the next refresh
            log.error("control state file not written for a risk halt: %s", error)
            return
        self.state = halted
        self._push()
        self._record("engine", "halt", "", "applied", f"{reason}; persisted until reset-halt")
        log.warning("control: %s (persisted until reset-halt)", reason)

    def execute(self, command: ControlCommand, who: str) -> dict[str, Any]:
        """Apply one command; returns the channel's answer (result, message, state)."""
        with self._lock:
            applied = apply_command(self.state, command)
            problems = ""
            if command.changes_state:
                try:
                    save_control_state(self.state_file, applied.state)
                except OSError as error:
                    problems = f"state file not written: {type(error).__name__}: {error}"
                    if not isinstance(command, _RESTRICTIVE):  # fail closed: nothing loosened
                        self._record(who, command.verb, command.argument, "failed",
                                     f"{problems}; not applied")
                        raise
                    problems += "; in force only until the engine stops"
            self.state = applied.state
            if command.changes_state:
                pushed = self._push()
                problems = "; ".join(text for text in (problems, pushed) if text)
            if isinstance(command, Kill) and self.execution is not None:
                problems = self._call_execution(lambda target: target.kill(command.reason),
                                                problems)
            if isinstance(command, ResetHalt) and self.execution is not None:
                problems = self._call_execution(lambda target: target.reset_halt(), problems)
            if problems:
                result = "failed"
            elif applied.changed or not command.changes_state:
                result = "applied"
            else:
                result = "unchanged"
            message = f"{applied.message}; {problems}" if problems else applied.message
            self._record(who, command.verb, command.argument, result, message)
            log.info("control %s %s by %s: %s (%s)", command.verb, command.argument, who,
                     result, message)
            return {"result": result, "message": message, **self.status()}

    def refuse(self, who: str, command: str, argument: str, detail: str) -> None:
        """Journal a request the channel refused (unauthenticated or malformed)."""
        with self._lock:
            self._record(who, command, argument, "refused", detail)
        log.warning("control request refused (who %r, command %r): %s", who, command, detail)

    def _push(self) -> str:
        """Hand the state to risk; settle what it reports flat. Returns a problem or ""."""
        if self.risk is None:
            return ""
        try:
            effect = self.risk.apply_control(self.state)
        except Exception as error:  # the state is persisted; a restart applies it again
            return f"risk did not take the state: {type(error).__name__}: {error}"
        self.last_effect = effect
        if effect.settled:
            self.state = settle(self.state, effect.settled)
            try:
                save_control_state(self.state_file, self.state)
            except OSError as error:  # harmless: a restart issues the settled closes again
                log.error("control state file not written after settling: %s", error)
        return ""

    def _call_execution(self, call: Callable[[ExecutionTarget], Any], problems: str) -> str:
        assert self.execution is not None
        try:
            call(self.execution)
        except Exception as error:
            text = f"live execution: {type(error).__name__}: {error}"
            return f"{problems}; {text}" if problems else text
        return problems

    # ---------------------------------------------------------------- views and journal

    def status(self) -> dict[str, Any]:
        with self._lock:
            effect = self.last_effect
            return {
                "state": self.state.to_json(),
                "engine": None if effect is None else {
                    "ts_event": effect.ts_event, "halted": effect.halted,
                    "halt_reason": effect.halt_reason, "positions": dict(effect.positions)},
            }

    def _record(self, who: str, command: str, argument: str, result: str, detail: str) -> None:
        if self.journal is None:
            return
        ts_wall = self.wall_clock_ns()
        self._sequence += 1
        effect = self.last_effect
        row = {
            "key": f"{ts_wall}:{self._instance}:{self._sequence}",
            "ts_wall": ts_wall,
            "ts_event": None if effect is None else effect.ts_event,
            "who": who,
            "command": command,
            "argument": argument,
            "result": result,
            "detail": detail,
        }
        try:
            self.journal([row])
        except Exception as error:  # journaling must not undo a command already in force
            log.error("control journal write failed: %s: %s", type(error).__name__, error)
