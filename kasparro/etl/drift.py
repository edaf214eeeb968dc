"""Schema drift: match the field names a source sends against the ones it should send.

A missing field is matched to an unexpected one when their names are close enough
(``current_price`` and ``currentPrice``, ``full_name`` and ``fullname``, ``created_at`` and
``created``). Above the threshold the field is mapped and the drift is recorded; below it the
field stays missing, and the rows that need it are rejected with the reason, so nothing is
guessed silently. Fields nobody expected are recorded and otherwise ignored.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

RECASED_CONFIDENCE = 0.95  # same letters, different case or separators


def normalise(name: str) -> str:
    """Return a field name without case or separators: ``Current_Price`` → ``currentprice``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def similarity(expected: str, found: str) -> float:
    """Return how likely ``found`` is ``expected`` renamed, from 0 to 1."""
    if expected == found:
        return 1.0
    a, b = normalise(expected), normalise(found)
    if a == b:
        return RECASED_CONFIDENCE
    return round(SequenceMatcher(None, a, b).ratio(), 2)


@dataclass
class FieldMap:
    """Where each expected field is found, and what drifted."""

    found_as: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def get(self, record: dict[str, Any], name: str) -> Any:
        """Return the value of expected field ``name`` in ``record``, wherever it is."""
        return record.get(self.found_as.get(name, name))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form, to pass between stages."""
        return {"found_as": self.found_as, "missing": self.missing, "events": self.events}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "FieldMap":
        """Rebuild a map passed between stages; no map means every field is where expected."""
        return cls(**data) if data else cls()


def match_fields(
    expected: Sequence[str],
    found: Iterable[str],
    threshold: float,
    known: Iterable[str] = (),
    required: Iterable[str] | None = None,
) -> FieldMap:
    """Map ``expected`` fields onto ``found`` ones; ``known`` extras are neither used nor drift.

    Only ``required`` fields (default: all expected) make rows fail when missing; an optional
    field that is absent is simply not there.
    """
    found = list(dict.fromkeys(found))
    required = set(expected if required is None else required)
    ignored = {*expected, *known}
    result = FieldMap()
    spare = [name for name in found if name not in ignored]
    for name in expected:
        if name in found:
            result.found_as[name] = name
            continue
        scored = sorted(((similarity(name, s), s) for s in spare), reverse=True)
        confidence, closest = scored[0] if scored else (0.0, None)
        if closest is not None and confidence >= threshold:
            spare.remove(closest)
            result.found_as[name] = closest
            result.events.append(
                {"kind": "renamed", "expected": name, "found": closest,
                 "confidence": confidence, "action": "mapped"}
            )  # fmt: skip
        elif name in required:
            hint = f"; closest is {closest!r} at {confidence:.2f}" if closest else ""
            result.missing[name] = f"field {name!r} is missing{hint}"
            result.events.append(
                {"kind": "missing", "expected": name, "closest": closest,
                 "confidence": confidence, "action": "rows rejected"}
            )  # fmt: skip
    result.events.extend(
        {"kind": "unexpected", "found": name, "action": "recorded"} for name in spare
    )
    return result
