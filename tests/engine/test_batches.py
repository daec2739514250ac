"""One contract over every columnar container: fields, dtypes, lengths and the tape schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.batches import _Columns
from storage.schemas import TAPE_TABLES
from storage.tape_chunks import CONTAINERS

ALL = sorted(_Columns.__subclasses__(), key=lambda kind: kind.__name__)


def test_every_container_is_covered() -> None:
    assert {kind.__name__ for kind in ALL} >= {
        "TradeColumns", "BookDeltaColumns", "BookSnapshotColumns", "QuoteColumns",
        "AggTradeColumns", "MarkPriceColumns", "KlineColumns", "FeedEventColumns"}


@pytest.mark.parametrize("kind", ALL, ids=lambda kind: kind.__name__)
def test_dtypes_name_the_fields_in_order_and_empty_uses_them(kind: type[_Columns]) -> None:
    assert [item.name for item in dataclasses.fields(kind)] == list(kind.DTYPES)
    empty = kind.empty()
    assert len(empty) == 0
    assert {name: values.dtype for name, values in empty.as_dict().items()} == {
        name: np.dtype(dtype) for name, dtype in kind.DTYPES.items()}


@pytest.mark.parametrize("kind", ALL, ids=lambda kind: kind.__name__)
def test_columns_of_different_lengths_are_refused_by_name(kind: type[_Columns]) -> None:
    columns = {name: np.zeros(2, dtype) for name, dtype in kind.DTYPES.items()}
    first = next(iter(columns))
    columns[first] = columns[first][:1]
    with pytest.raises(ValueError, match=f"{kind.__name__}: columns have different lengths"):
        kind(**columns)


@pytest.mark.parametrize("table", sorted(CONTAINERS))
def test_tape_tables_hold_exactly_the_container_columns(table: str) -> None:
    _attribute, kind = CONTAINERS[table]
    assert TAPE_TABLES[table].names == ["symbol", *kind.DTYPES]
