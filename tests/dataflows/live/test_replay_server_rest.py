"""The replay exchange's REST answers agree with its streams the way Binance's do: a depth
snapshot plus the diffs after it rebuild the server's book, trades are exactly the played ones,
and errors, weights and rate limits have Binance's shapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dataflows.capture import read_capture
from dataflows.live.replay_server import ReplayServer

Book = dict[str, dict[float, str]]


def capture_data(paths: list[Path], stream_suffix: str) -> list[dict[str, Any]]:
    """The decoded `data` of every capture frame whose stream ends with `stream_suffix`."""
    found = []
    for path in paths:
        for chunk, _ in read_capture(path):
            for frame in chunk.frames:
                message = orjson.loads(frame)
                if message.get("stream", "").endswith(stream_suffix):
                    found.append(message["data"])
    return found


def capture_snapshot(paths: list[Path]) -> dict[str, Any]:
    for path in paths:
        for chunk, _ in read_capture(path):
            for frame in chunk.frames:
                message = orjson.loads(frame)
                if "lastUpdateId" in message:
                    return message
    raise AssertionError("no snapshot in the captures")


def rebuild(snapshot: dict[str, Any], diffs: list[dict[str, Any]], futures: bool
            ) -> tuple[Book, int]:
    """Binance's documented procedure for a local book: (book, last applied u).

    Spot: drop diffs with u <= lastUpdateId; the first must have U <= lastUpdateId + 1 <= u, each
    next one U == previous u + 1. Futures: drop u < lastUpdateId; the first must have
    U <= lastUpdateId <= u, each next one pu == previous u."""
    book: Book = {"b": {}, "a": {}}
    for side, key in (("b", "bids"), ("a", "asks")):
        for price, qty in snapshot[key]:
            book[side][float(price)] = qty
    last = snapshot["lastUpdateId"]
    first = True
    for diff in diffs:
        if diff["u"] < last or (diff["u"] == last and not futures):
            continue
        if first:
            low = diff["U"] <= (last if futures else last + 1)
            assert low and diff["u"] >= last, (diff["U"], diff["u"], last)
            first = False
        elif futures:
            assert diff["pu"] == last, ("gap", diff["pu"], last)
        else:
            assert diff["U"] == last + 1, ("gap", diff["U"], last)
        for side in ("b", "a"):
            for price, qty in diff[side]:
                if float(qty) == 0:
                    book[side].pop(float(price), None)
                else:
                    book[side][float(price)] = qty
        last = diff["u"]
    return book, last


def top(book: Book, levels: int) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    bids = sorted(book["b"].items(), reverse=True)[:levels]
    asks = sorted(book["a"].items())[:levels]
    return bids, asks


async def get(session: aiohttp.ClientSession, url: str, **headers: str
              ) -> tuple[int, Any, dict[str, str]]:
    async with session.get(url, headers=headers) as answer:
        return answer.status, orjson.loads(await answer.read()), dict(answer.headers)


async def collect_json(ws: ClientConnection, out: list[dict[str, Any]]) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            out.append(orjson.loads(await ws.recv(decode=False)))


async def drain(server: ReplayServer, out: list[Any]) -> None:
    await asyncio.to_thread(server.wait_finished, 120)
    count = -1
    while count != len(out):
        count = len(out)
        await asyncio.sleep(0.3)


async def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def snapshot_then_diffs(server: ReplayServer, stream: str, prefix: str, limit: int,
                        moments: tuple[int, ...]) -> tuple[list[Any], list[Any], Any]:
    """Diffs received on the socket, REST snapshots taken once `moments` diffs had arrived, and
    the final REST snapshot after the timeline ended."""
    async def main() -> tuple[list[Any], list[Any], Any]:
        diffs: list[dict[str, Any]] = []
        snapshots = []
        url = f"{server.rest_url}{prefix}/depth?symbol=BTCUSDT&limit={limit}"
        async with aiohttp.ClientSession() as session, \
                connect(f"{server.ws_url}/ws/{stream}", max_size=None) as ws:
            task = asyncio.create_task(collect_json(ws, diffs))
            server.start()
            for moment in moments:
                await until(lambda moment=moment: len(diffs) >= moment)
                status, body, _ = await get(session, url)
                assert status == 200
                snapshots.append(body)
            await drain(server, diffs)
            final = (await get(session, url))[1]
        await task
        return diffs, snapshots, final
    return asyncio.run(main())


@pytest.mark.slow
def test_spot_snapshot_plus_later_diffs_rebuild_the_servers_book(
    spot_captures: list[Path],
) -> None:
    with ReplayServer(spot_captures, frames_per_s=30_000).running() as server:
        diffs, snapshots, final = snapshot_then_diffs(
            server, "btcusdt@depth@100ms", "/api/v3", 5000, (1, 800, 4000))
    assert diffs[-1]["u"] == final["lastUpdateId"]
    expected = {"b": {float(p): q for p, q in final["bids"]},
                "a": {float(p): q for p, q in final["asks"]}}
    for snapshot in snapshots:
        book, last = rebuild(snapshot, diffs, futures=False)
        assert last == final["lastUpdateId"]
        assert book == expected  # every level, every quantity string
    assert len({snapshot["lastUpdateId"] for snapshot in snapshots}) == 3


@pytest.mark.slow
def test_usdm_snapshot_plus_later_diffs_rebuild_the_servers_book(
    usdm_captures: list[Path],
) -> None:
    with ReplayServer(usdm_captures, market="usdm", frames_per_s=50_000).running() as server:
        diffs, snapshots, final = snapshot_then_diffs(
            server, "btcusdt@depth@0ms", "/fapi/v1", 1000, (1, 3000))
    assert {"E", "T"} <= final.keys() and final["E"] == diffs[-1]["E"]
    expected = {"b": {float(p): q for p, q in final["bids"]},
                "a": {float(p): q for p, q in final["asks"]}}
    for snapshot in snapshots:
        book, last = rebuild(snapshot, diffs, futures=True)
        assert last == final["lastUpdateId"] == diffs[-1]["u"]
        assert top(book, 500) == top(expected, 500)  # a 1000-level snapshot: compare the top


@pytest.mark.slow
def test_the_servers_book_is_the_capture_book(spot_captures: list[Path]) -> None:
    """The server's book after the timeline equals the snapshot plus every capture diff."""
    reference, _ = rebuild(capture_snapshot(spot_captures),
                           capture_data(spot_captures, "@depth@100ms"), futures=False)

    async def final(server: ReplayServer) -> Any:
        server.start()
        await asyncio.to_thread(server.wait_finished, 120)
        async with aiohttp.ClientSession() as session:
            return (await get(session, f"{server.rest_url}/api/v3/depth?symbol=BTCUSDT"
                                       "&limit=5000"))[1]

    with ReplayServer(spot_captures, frames_per_s=200_000).running() as server:
        book = asyncio.run(final(server))
    assert {"b": {float(p): q for p, q in book["bids"]},
            "a": {float(p): q for p, q in book["asks"]}} == reference


@pytest.mark.slow
def test_trades_endpoints_answer_exactly_the_played_trades(spot_captures: list[Path]) -> None:
    capture = [(t["t"], t["p"], t["q"], t["T"], t["m"])
               for t in capture_data(spot_captures, "@trade")]

    async def main(server: ReplayServer) -> tuple[list[Any], list[Any], list[Any]]:
        received: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session, \
                connect(f"{server.ws_url}/ws/btcusdt@trade", max_size=None) as ws:
            task = asyncio.create_task(collect_json(ws, received))
            server.start()
            await until(lambda: len(received) >= 3000)
            status, midway, _ = await get(session, f"{server.rest_url}/api/v3/trades"
                                                   "?symbol=BTCUSDT&limit=1000")
            assert status == 200
            await drain(server, received)
            pages: list[Any] = []
            from_id = capture[0][0]
            while True:
                _, page, _ = await get(session, f"{server.rest_url}/api/v3/historicalTrades"
                                                f"?symbol=BTCUSDT&fromId={from_id}&limit=1000")
                if not page:
                    break
                pages.extend(page)
                from_id = page[-1]["id"] + 1
            _, newest, _ = await get(session, f"{server.rest_url}/api/v3/trades?symbol=BTCUSDT")
        await task
        return midway, pages, newest

    with ReplayServer(spot_captures, frames_per_s=40_000).running() as server:
        midway, history, newest = asyncio.run(main(server))
    assert [(t["id"], t["price"], t["qty"], t["time"], t["isBuyerMaker"])
            for t in history] == capture
    assert all(t["isBestMatch"] is True for t in history)
    assert all(Decimal(t["quoteQty"]) == Decimal(t["price"]) * Decimal(t["qty"])
               for t in history[:500])
    ids = [t["id"] for t in midway]  # while playing: the newest 1000 played so far, in order
    assert len(ids) == 1000 and ids == list(range(ids[0], ids[0] + 1000))
    assert capture[0][0] <= ids[0] and ids[-1] < capture[-1][0]
    assert [t["id"] for t in newest] == [row[0] for row in capture[-500:]]  # default limit 500


def test_agg_trades_are_derived_from_trades_like_binance_forms_them(
    spot_captures: list[Path],
) -> None:
    trades = {t["t"]: t for t in capture_data(spot_captures[:1], "@trade")}

    async def main(server: ReplayServer) -> tuple[list[Any], list[Any], Any]:
        server.start()
        await asyncio.to_thread(server.wait_finished, 120)
        base = f"{server.rest_url}/api/v3/aggTrades?symbol=BTCUSDT"
        aggs: list[Any] = []
        async with aiohttp.ClientSession() as session:
            from_id = min(trades)
            while page := (await get(session, f"{base}&fromId={from_id}&limit=1000"))[1]:
                aggs.extend(page)
                from_id = page[-1]["a"] + 1
            start = aggs[100]["T"]
            window = (await get(session, f"{base}&startTime={start}&endTime={start + 2000}"))[1]
            too_long = await get(session, f"{base}&startTime=0&endTime={3_600_001}")
        return aggs, window, too_long

    with ReplayServer(spot_captures[:1], frames_per_s=200_000).running() as server:
        aggs, window, too_long = asyncio.run(main(server))
    covered = [trade_id for agg in aggs for trade_id in range(agg["f"], agg["l"] + 1)]
    assert covered == sorted(trades)  # every trade in exactly one aggregate, in order
    for agg in aggs:
        members = [trades[i] for i in range(agg["f"], agg["l"] + 1)]
        assert agg["a"] == agg["f"]
        assert {(t["p"], t["m"], t["T"]) for t in members} == {(agg["p"], agg["m"], agg["T"])}
        assert Decimal(agg["q"]) == sum(Decimal(t["q"]) for t in members)
    for before, after in pairwise(aggs):  # maximal: neighbours differ
        assert (before["p"], before["m"], before["T"]) != (after["p"], after["m"], after["T"])
    assert len(aggs) < len(trades)
    assert window and all(window[0]["T"] <= agg["T"] <= window[0]["T"] + 2000 for agg in window)
    assert too_long[0] == 400 and too_long[1]["code"] == -1127


def test_errors_have_binance_shapes_and_weights_are_counted(spot_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> dict[str, tuple[int, Any, dict[str, str]]]:
        api = f"{server.rest_url}/api/v3"
        answers = {}
        async with aiohttp.ClientSession() as session:
            for name, path in (
                ("ping", "/ping"), ("time", "/time"), ("info", "/exchangeInfo"),
                ("depth100", "/depth?symbol=BTCUSDT"),
                ("depth5000", "/depth?symbol=BTCUSDT&limit=5000"),
                ("bad_symbol", "/depth?symbol=ETHBTC"), ("no_symbol", "/trades"),
                ("bad_limit", "/trades?symbol=BTCUSDT&limit=ten"),
                ("big_limit", "/trades?symbol=BTCUSDT&limit=5000"),
                ("extra", "/depth?symbol=BTCUSDT&colour=red"),
                ("ticker", "/ticker/bookTicker?symbol=BTCUSDT"),
                ("tickers", "/ticker/bookTicker"), ("unknown", "/klines?symbol=BTCUSDT"),
            ):
                answers[name] = await get(session, api + path)
        return answers

    with ReplayServer(spot_captures, weight_limit_1m=10_000).running() as server:
        answers = asyncio.run(main(server))
        stats = server.stats
    assert answers["ping"][:2] == (200, {})
    assert answers["time"][1]["serverTime"] == 1723161255208  # the first diff's E
    symbol = answers["info"][1]["symbols"][0]
    assert (symbol["symbol"], symbol["baseAsset"], symbol["quoteAsset"]) == \
        ("BTCUSDT", "BTC", "USDT")
    assert symbol["filters"][0]["tickSize"] == "0.01000000"
    assert answers["depth100"][1]["lastUpdateId"] == 50093239218  # the capture's snapshot
    assert len(answers["depth100"][1]["bids"]) == 100
    assert answers["bad_symbol"][:2] == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert answers["no_symbol"][0] == 400 and answers["no_symbol"][1]["code"] == -1102
    assert answers["bad_limit"][1]["code"] == -1100
    assert answers["big_limit"][1]["code"] == -1130
    assert answers["extra"][1]["code"] == -1104
    assert answers["unknown"][0] == 404
    ticker = answers["ticker"][1]  # before any bookTicker frame: the book's best levels
    assert ticker["bidPrice"] == "61837.63000000" and ticker["askPrice"] == "61837.64000000"
    assert answers["tickers"][1] == [ticker]
    used = [int(answers[name][2]["X-MBX-USED-WEIGHT-1M"])
            for name in ("ping", "time", "info", "depth100", "depth5000")]
    assert used == [1, 2, 22, 27, 277]  # weights 1, 1, 20, 5, 250
    assert stats.requests["/api/v3/depth"] == 4 and stats.requests["unknown path"] == 1


def test_over_the_weight_limit_answers_429_with_retry_after(spot_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> list[tuple[int, Any, dict[str, str]]]:
        async with aiohttp.ClientSession() as session:
            return [await get(session, f"{server.rest_url}/api/v3/trades?symbol=BTCUSDT")
                    for _ in range(5)]

    with ReplayServer(spot_captures[:1], weight_limit_1m=60).running() as server:
        answers = asyncio.run(main(server))
        stats = server.stats
    assert [status for status, _, _ in answers] == [200, 200, 429, 429, 429]  # 25 each
    assert answers[2][1]["code"] == -1003 and "request weight per 1 MINUTE is 60" in \
        answers[2][1]["msg"]
    assert 1 <= int(answers[2][2]["Retry-After"]) <= 60
    assert answers[4][2]["X-MBX-USED-WEIGHT-1M"] == "125"
    assert stats.rate_limited == 3


@pytest.mark.slow
def test_usdm_endpoints_keys_limits_and_premium_index(usdm_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> dict[str, tuple[int, Any, dict[str, str]]]:
        api = f"{server.rest_url}/fapi/v1"
        server.start()
        await asyncio.to_thread(server.wait_finished, 120)
        async with aiohttp.ClientSession() as session:
            return {
                "depth": await get(session, f"{api}/depth?symbol=BTCUSDT&limit=5"),
                "odd_limit": await get(session, f"{api}/depth?symbol=BTCUSDT&limit=7"),
                "no_key": await get(session, f"{api}/historicalTrades?symbol=BTCUSDT"),
                "key": await get(session, f"{api}/historicalTrades?symbol=BTCUSDT&limit=3",
                                 **{"X-MBX-APIKEY": "loopback-test-key"}),
                "ticker": await get(session, f"{api}/ticker/bookTicker?symbol=BTCUSDT"),
                "premium": await get(session, f"{api}/premiumIndex?symbol=BTCUSDT"),
                "agg": await get(session, f"{api}/aggTrades?symbol=BTCUSDT&limit=2"),
            }

    last_trade = capture_data(usdm_captures, "@trade")[-1]
    last_ticker = capture_data(usdm_captures, "@bookTicker")[-1]
    with ReplayServer(usdm_captures, market="usdm", frames_per_s=500_000).running() as server:
        answers = asyncio.run(main(server))
    depth = answers["depth"][1]
    assert list(depth) == ["lastUpdateId", "E", "T", "bids", "asks"] and len(depth["bids"]) == 5
    assert answers["depth"][2]["X-MBX-USED-WEIGHT-1M"] == "2"
    assert answers["odd_limit"][1]["code"] == -1130
    assert answers["no_key"][:2] == (401, {"code": -2014, "msg": "API-key format invalid."})
    assert "loopback-test-key" not in repr(answers)  # the key is never echoed
    assert answers["key"][1][-1]["id"] == last_trade["t"]
    assert "isBestMatch" not in answers["key"][1][-1]
    assert answers["ticker"][1] == {
        "symbol": "BTCUSDT", "bidPrice": last_ticker["b"], "bidQty": last_ticker["B"],
        "askPrice": last_ticker["a"], "askQty": last_ticker["A"], "time": last_ticker["T"],
        "lastUpdateId": last_ticker["u"]}
    premium = answers["premium"][1]  # no markPrice stream in the capture: the book's mid
    bid, ask = float(depth["bids"][0][0]), float(depth["asks"][0][0])
    assert float(premium["markPrice"]) == pytest.approx((bid + ask) / 2, abs=0.01)
    assert premium["lastFundingRate"] == "0.00000000"
    assert premium["nextFundingTime"] % (8 * 3_600_000) == 0
    assert "M" not in answers["agg"][1][0] and answers["agg"][1][-1]["l"] == last_trade["t"]
