"""The small interface every source implements, and the records that cross it."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from kasparro.models import Checkpoint, RawRecordMixin


class SourceError(RuntimeError):
    """The source as a whole cannot be read (unreachable, unreadable, wrong layout).

    ``transient`` marks failures worth retrying later: timeouts, refused connections, 429, 5xx.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Observation:
    """One value of one metric, as a source states it."""

    external_id: str
    metric: str
    value: Decimal
    timestamp: datetime
    name: str | None = None
    symbol: str | None = None
    asset_hint: str | None = None
    currency: str = "USD"


@dataclass(frozen=True)
class KnownAsset:
    """A coin identity a source vouches for (CoinGecko's own id, symbol and name)."""

    id: str
    symbol: str
    name: str


@dataclass
class RawRow:
    """A record as read from the source, ready for its raw table."""

    record_key: str
    payload: Any
    columns: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """A feed: read records into its raw table, then turn raw records into observations."""

    name: ClassVar[str]
    raw_model: ClassVar[type[RawRecordMixin]]

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    @abstractmethod
    def read(self, session: Session, checkpoint: Checkpoint | None) -> Iterator[RawRow]:
        """Yield every record past what is stored already as a raw row, usable or not."""

    @abstractmethod
    def context(self) -> dict[str, Any]:
        """Return what the transform needs to know about the read that just ended."""

    @abstractmethod
    def observations(self, raw: RawRecordMixin, context: dict[str, Any]) -> list[Observation]:
        """Turn one raw record into observations; raise InvalidValue to reject it."""

    @abstractmethod
    def advance(self, cursor: dict[str, Any], raw: RawRecordMixin, context: dict[str, Any]) -> dict:
        """Return the cursor that covers ``raw`` too."""

    @abstractmethod
    def describe(self, raw: RawRecordMixin) -> tuple[str, str]:
        """Return where the record was (``line 7``) and its text, for a rejection."""

    def prepare(self, session: Session, raws: list[RawRecordMixin]) -> None:
        """Load what turning ``raws`` into observations needs beyond the rows themselves."""
        return None  # most sources need nothing beyond the rows

    def duplicates(self, session: Session, raws: list[RawRecordMixin]) -> dict[int, str]:
        """Return, by raw id, the records in ``raws`` that repeat an earlier record, with why."""
        return {}

    def known_assets(self, raw: RawRecordMixin, context: dict[str, Any]) -> list[KnownAsset]:
        """Return the coin identities this record vouches for (only an authoritative source)."""
        return []
