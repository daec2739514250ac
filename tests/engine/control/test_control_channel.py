"""The control channel over loopback: the right token is served, a wrong, missing or malformed
one is refused and journaled, and the token shows up in no answer, log line, journal row or repr."""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config import RiskConfig
from engine.control.channel import (
    COMMAND_PATH,
    ControlChannelError,
    ControlServer,
    send_command,
    token_from_env,
)
from engine.control.controller import Controller
from engine.control.state import load_control_state
from engine.risk import PortfolioRisk
from storage.journal import JournalWriter, read_table

TOKEN = "canary-control-token-5f1e2d3c4b5a"


@dataclass
class Channel:
    server: ControlServer
    controller: Controller
    writer: JournalWriter
    journal: Path
    state_file: Path

    def journal_rows(self) -> list[tuple[object, ...]]:
        self.writer.close()
        return read_table(self.journal, "control_events")


@pytest.fixture
def channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> Iterator[Channel]:
    monkeypatch.setenv("ATS_CONTROL_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "journal.duckdb"
    writer = JournalWriter(journal, "control-test")
    state_file = tmp_path / "control_state.json"
    controller = Controller(state_file, PortfolioRisk(RiskConfig(), 100_000.0),
                            journal=lambda rows: writer.append("control_events", rows))
    controller.start()
    server = ControlServer(controller, "127.0.0.1", 0, refresh_s=0.05).start()
    yield Channel(server, controller, writer, journal, state_file)
    server.stop()
    writer.close()
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(server) + repr(controller) + repr(server._server)


def test_the_right_token_applies_the_command(channel: Channel) -> None:
    status, answer = send_command(channel.server.url, ["blacklist", "DOGE"], "alice", TOKEN)
    assert status == 200 and answer["result"] == "applied"
    assert answer["state"]["blacklist"] == ["DOGE"]
    assert load_control_state(channel.state_file).blacklist == ("DOGE",)
    status, answer = send_command(channel.server.url, ["status"], "alice", TOKEN)
    assert status == 200 and answer["state"]["blacklist"] == ["DOGE"]
    rows = channel.journal_rows()
    assert [(r[4], r[5], r[6], r[7]) for r in rows[-2:]] == [
        ("alice", "blacklist", "DOGE", "applied"), ("alice", "status", "", "applied")]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing token"),
        (f"Bearer {TOKEN}x", "wrong token"),
        (f"Bearer {TOKEN[:-1]}", "wrong token"),
        ("Bearer ", "malformed Authorization header"),
        (f"Basic {TOKEN}", "malformed Authorization header"),
    ],
)
def test_unauthenticated_requests_are_refused_and_journaled(
        channel: Channel, header: str | None, reason: str) -> None:
    status, answer = _post(channel.server.url, {"command": ["kill"], "who": "mallory"}, header)
    assert status == 401 and answer["result"] == "refused" and reason in answer["error"]
    assert not load_control_state(channel.state_file).halted
    assert not channel.controller.state.halted
    row = channel.journal_rows()[-1]
    assert (row[4], row[5], row[7]) == ("mallory", "kill", "refused") and reason in str(row[8])
    assert TOKEN not in json.dumps(answer)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "body is not JSON"),
        (b"[1, 2]", 400, "body must be a JSON object"),
        (json.dumps({"command": "pause", "who": "eve"}).encode(), 400,
         "'command' must be a list of strings"),
        (json.dumps({"command": ["pause"]}).encode(), 400, "'who' must be a non-empty string"),
        (json.dumps({"command": ["pause"], "who": "x" * 65}).encode(), 400, "at most 64"),
        (json.dumps({"command": ["set-max-risk", "9"], "who": "eve"}).encode(), 400,
         "must be a percentage of equity"),
        (json.dumps({"command": ["launch"], "who": "eve"}).encode(), 400, "unknown command"),
    ],
)
def test_malformed_requests_are_refused_and_journaled(
        channel: Channel, body: bytes, status: int, reason: str) -> None:
    got, answer = _post(channel.server.url, body, f"Bearer {TOKEN}")
    assert got == status and reason in answer["error"]
    assert channel.controller.state == load_control_state(channel.state_file)
    assert not channel.controller.state.paused
    row = channel.journal_rows()[-1]
    assert row[7] == "refused" and reason in str(row[8])


def test_other_paths_methods_and_oversized_bodies_are_refused(channel: Channel) -> None:
    request = urllib.request.Request(channel.server.url + COMMAND_PATH, method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405
    status, _ = _post(channel.server.url, {"command": ["pause"], "who": "a"}, f"Bearer {TOKEN}",
                      path="/v2/other")
    assert status == 404
    status, answer = _post(channel.server.url, b"x" * 20_000, f"Bearer {TOKEN}")
    assert status == 400 and "at most" in answer["error"]
    assert [row[7] for row in channel.journal_rows()[-3:]] == ["refused"] * 3


def test_the_token_is_in_no_answer_journal_row_or_log(channel: Channel,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    for words in (["pause"], ["kill", "canary"], ["reset-halt"], ["status"]):
        _, answer = send_command(channel.server.url, words, "alice", TOKEN)
        assert TOKEN not in json.dumps(answer)
    _post(channel.server.url, {"command": ["pause"], "who": "x"}, f"Bearer wrong-{TOKEN}")
    rows = channel.journal_rows()
    assert len(rows) >= 6
    assert TOKEN not in repr(rows)
    assert TOKEN not in channel.state_file.read_text()
    assert TOKEN.encode() not in channel.journal.read_bytes()
    assert "control pause" in caplog.text or "control request refused" in caplog.text


def test_exit_requests_settle_through_the_refresh_thread(channel: Channel) -> None:
    _, answer = send_command(channel.server.url, ["close-all"], "alice", TOKEN)
    assert answer["result"] == "applied"  # nothing held: settled at once
    assert answer["state"]["exits"] == []


def test_refuses_to_start_without_a_usable_token(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    controller = Controller(tmp_path / "state.json")
    monkeypatch.delenv("ATS_CONTROL_TOKEN", raising=False)
    with pytest.raises(ControlChannelError, match="ATS_CONTROL_TOKEN is not set"):
        ControlServer(controller)
    monkeypatch.setenv("ATS_CONTROL_TOKEN", "short")
    with pytest.raises(ControlChannelError, match="shorter than 16") as caught:
        token_from_env()
    assert "short'" not in str(caught.value)
    with pytest.raises(ControlChannelError, match="not a loopback address"):
        ControlServer(controller, host="0.0.0.0", token=TOKEN)


def test_the_client_names_the_url_when_no_engine_answers() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ControlChannelError, match=f"no engine control channel answering at "
                                                  f"{url}") as caught:
        send_command(url, ["status"], "alice", TOKEN, timeout_s=2)
    assert TOKEN not in str(caught.value)


def _post(url: str, body: dict[str, object] | bytes, header: str | None,
          path: str = COMMAND_PATH) -> tuple[int, dict[str, object]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), json.loads(error.read())
