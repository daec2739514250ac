"""The operator's command vocabulary: every verb parses, bad arguments fail naming themselves."""

from __future__ import annotations

import pytest

from engine.control.commands import (
    MAX_RISK_PCT,
    VERBS,
    Blacklist,
    CloseAll,
    ClosePosition,
    CommandError,
    ForceExit,
    Kill,
    Pause,
    ResetHalt,
    Resume,
    SetMaxRisk,
    Status,
    Unblacklist,
    command_from_json,
    parse_command,
)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["pause"], Pause()),
        (["RESUME"], Resume()),
        (["close-all"], CloseAll()),
        (["close-position", "btcusdt"], ClosePosition("BTCUSDT")),
        (["set-max-risk", "0.5"], SetMaxRisk(0.005)),
        (["set-max-risk", "1.5%"], SetMaxRisk(0.015)),
        (["set-max-risk", "off"], SetMaxRisk(None)),
        (["blacklist", "doge"], Blacklist("DOGE")),
        (["unblacklist", "BTC/USDT:USDT"], Unblacklist("BTC/USDT:USDT")),
        (["force-exit", "ETH"], ForceExit("ETH")),
        (["kill"], Kill("kill switch")),
        (["kill", "fat", "finger"], Kill("fat finger")),
        (["reset-halt"], ResetHalt()),
        (["status"], Status()),
    ],
)
def test_every_verb_parses(words: list[str], expected: object) -> None:
    assert parse_command(words) == expected


def test_words_parse_back_into_the_same_command() -> None:
    for words in (["set-max-risk", "0.25"], ["kill", "venue down"], ["force-exit", "SOL"],
                  ["close-position", "ETHUSDT"], ["pause"], ["set-max-risk", "off"]):
        command = parse_command(words)
        assert parse_command(command.words()) == command
    assert len(VERBS) == 11


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "no command given"),
        (["halt"], "unknown command 'halt'"),
        (["pause", "now"], "pause takes no argument"),
        (["close-position"], "close-position takes exactly one ID"),
        (["blacklist", "BTC", "ETH"], "blacklist takes exactly one ASSET, got 2"),
        (["blacklist", "BTC USDT;rm"], "blacklist ASSET 'BTC USDT;rm'"),
        (["force-exit", "../etc"], "force-exit ASSET '../etc'"),
        (["set-max-risk", "lots"], "set-max-risk PCT 'lots' is not a number"),
        (["set-max-risk", "0"], "must be a percentage of equity in (0, 5]"),
        (["set-max-risk", "-1"], "must be a percentage of equity"),
        (["set-max-risk", "nan"], "must be a percentage of equity"),
        (["set-max-risk", "inf%"], "must be a percentage of equity"),
        (["set-max-risk", str(MAX_RISK_PCT + 0.1)], "must be a percentage of equity"),
        (["kill", "x" * 201], "kill REASON is 201 characters"),
        (["kill", "bad\x1b[31m"], "kill REASON contains control characters"),
    ],
)
def test_bad_commands_name_the_problem(words: list[str], message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(words)
    assert message in str(caught.value)


def test_percent_is_always_a_percentage_so_a_mistyped_fraction_is_smaller() -> None:
    command = parse_command(["set-max-risk", "0.01"])  # meant 1%? reads 0.01%: the safe side
    assert isinstance(command, SetMaxRisk)
    assert command.fraction == pytest.approx(0.0001)
    assert parse_command(["set-max-risk", "5"]) == SetMaxRisk(0.05)


def test_json_body_must_hold_a_list_of_strings() -> None:
    assert command_from_json({"command": ["blacklist", "doge"]}) == Blacklist("DOGE")
    for body in ({}, {"command": "pause"}, {"command": ["pause", 3]}):
        with pytest.raises(CommandError, match="'command' must be a list of strings"):
            command_from_json(body)
