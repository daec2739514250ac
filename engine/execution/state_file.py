"""The persisted part of live execution: HALTED and the next client-order sequence.

One small JSON file, written atomically (temporary file in the same directory, fsync, rename),
so a crash leaves the old or the new content, never a torn file. A file that exists but cannot be
read fails closed: it counts as HALTED with the reason saying why.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExecutionState:
    halted: bool = False
    halt_reason: str = ""
    next_sequence: int = 0


def load_state(path: Path) -> ExecutionState:
    if not path.exists():
        return ExecutionState()
    try:
        data = json.loads(path.read_text())
        return ExecutionState(bool(data["halted"]), str(data.get("halt_reason", "")),
                              int(data.get("next_sequence", 0)))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return ExecutionState(True, f"state file {path.name} unreadable ({type(error).__name__})")


def save_state(path: Path, state: ExecutionState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(state), handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
