"""A batch's record, as stored: the raw table's columns, read by name as a read-back row's are."""

import pytest

from kasparro.etl.sources.base import RawRow, StoredRaw


@pytest.mark.parametrize(
    "columns",
    [{}, {"line_no": 7, "end_offset": 120}, {"line_no": 1, "raw_text": None}],
)
def test_a_stored_record_answers_its_columns_by_name(columns):
    row = RawRow(record_key="k1", payload={"price": "1"}, columns=columns)

    stored = StoredRaw.of(42, row)

    assert (stored.id, stored.record_key, stored.payload) == (42, "k1", {"price": "1"})
    for name, value in columns.items():
        assert getattr(stored, name) == value
    with pytest.raises(AttributeError):
        stored.not_a_column  # noqa: B018
