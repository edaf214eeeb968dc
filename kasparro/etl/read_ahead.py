"""Read a source's next batch in a thread while the current one loads.

Loading a batch waits on the database most of its time, and the driver lets other Python code
run while it waits: a second thread that frames the file or fetches the next page meanwhile
turns that wait into work. ``concurrent.futures`` runs the read; what is written here is only
the hand-over: the first batch is read in the caller's thread (a source may use the database
session until its first record), a read's error is raised where the batch is taken, and
closing stops the reading once the batch in progress ends.
"""

import contextvars
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def _next_batch(items: Iterator[T], size: int) -> list[T]:
    return list(islice(items, size))


@contextmanager
def read_ahead(items: Iterator[T], size: int) -> Iterator[Iterator[list[T]]]:
    """Give batches of up to ``size`` items, reading the next batch in a thread meanwhile.

    On leaving the block, the read in progress ends and ``items`` is closed.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = []

        def batches() -> Iterator[list[T]]:
            batch = _next_batch(items, size)
            while batch:
                # The thread logs with the caller's context: run id and source stay bound.
                following = pool.submit(contextvars.copy_context().run, _next_batch, items, size)
                pending[:] = [following]
                yield batch
                batch = following.result()

        try:
            yield batches()
        finally:
            wait(pending)
            close = getattr(items, "close", None)
            if close is not None:
                close()
