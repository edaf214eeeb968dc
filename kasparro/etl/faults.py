"""Failure injection: make a named source fail at a chosen point, to prove clean resumes.

``crash`` kills the process about to load the first batch with SIGKILL, as the kernel's
out-of-memory killer would: no exception, no cleanup, no acknowledgement.
"""

import os
import signal
from dataclasses import dataclass

POINTS = ("after_rows", "before_load", "on_commit", "crash")


class InjectedFailure(RuntimeError):
    """The failure a FailurePlan asked for."""


@dataclass(frozen=True)
class FailurePlan:
    """``source:point[:rows]``, e.g. ``csv1:after_rows:5``, ``coingecko_api:before_load``."""

    source: str
    point: str
    rows: int = 0

    @classmethod
    def parse(cls, spec: str) -> "FailurePlan | None":
        """Read a plan from its setting; an empty setting means no plan."""
        if not spec:
            return None
        parts = spec.split(":")
        if (
            len(parts) not in (2, 3)
            or parts[1] not in POINTS
            or (len(parts) == 3) != (parts[1] == "after_rows")
        ):
            raise ValueError(
                f"ETL_INJECT_FAILURE must be source:after_rows:N, source:before_load, "
                f"source:on_commit or source:crash; got {spec!r}"
            )
        try:
            rows = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise ValueError(f"ETL_INJECT_FAILURE row count must be a number: {spec!r}") from None
        return cls(source=parts[0], point=parts[1], rows=rows)

    def check(self, source: str, point: str, rows: int = 0) -> None:
        """Raise InjectedFailure if this plan targets this source at this point."""
        if source == self.source and point == self.point and rows >= self.rows:
            if point == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            detail = f" after {self.rows} rows" if point == "after_rows" else ""
            raise InjectedFailure(f"injected failure: {source} at {point}{detail}")
