"""The next batch is read in a thread while the current one loads; errors and closing hold."""

import threading

import pytest
import structlog

from kasparro.etl.read_ahead import read_ahead


def test_batches_come_in_order_and_the_next_is_read_in_another_thread():
    readers = []

    def items():
        for i in range(7):
            readers.append(threading.current_thread().name)
            yield i

    with read_ahead(items(), 3) as batches:
        assert list(batches) == [[0, 1, 2], [3, 4, 5], [6]]
    # The first batch in the caller's thread (a source may use the session until then).
    assert set(readers[:3]) == {threading.current_thread().name}
    assert all(name.startswith("read-ahead") for name in readers[3:])


def test_an_error_of_the_read_is_raised_where_its_batch_is_taken():
    def items():
        yield from range(4)
        raise OSError("disk gone")

    taken = []
    with pytest.raises(OSError, match="disk gone"), read_ahead(items(), 2) as batches:
        for batch in batches:
            taken.append(batch)
    assert taken == [[0, 1], [2, 3]]


def test_leaving_early_ends_the_read_and_closes_the_source():
    state = {"read": 0, "closed": False}

    def items():
        try:
            for i in range(1000):
                state["read"] += 1
                yield i
        finally:
            state["closed"] = True

    with pytest.raises(RuntimeError), read_ahead(items(), 10) as batches:
        for _ in batches:
            raise RuntimeError("the load failed")
    assert state["closed"]
    assert state["read"] == 20  # the batch taken and the one read ahead, no more


def test_the_reading_thread_logs_with_the_callers_context():
    seen = []

    def items():
        for i in range(4):
            seen.append(structlog.contextvars.get_contextvars().get("run_id"))
            yield i

    with structlog.contextvars.bound_contextvars(run_id=7), read_ahead(items(), 2) as batches:
        assert len(list(batches)) == 2
    assert seen == [7, 7, 7, 7]


def test_an_empty_source_gives_no_batch():
    with read_ahead(iter(()), 5) as batches:
        assert list(batches) == []
