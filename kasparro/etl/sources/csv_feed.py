"""The CSV sources' shared base: appends, edits, replaced files, bad bytes.

A file is read as a stream of raw rows by ``csv_read`` (records framed on bytes by
``csv_framing``); here the csv module splits each stored record into fields, with the header
of the generation it was read in, and the fields become observations.
"""

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap
from kasparro.etl.parsing import InvalidValue, parse_amount, parse_timestamp
from kasparro.etl.sources.base import (
    Observation,
    Pending,
    ReadReport,
    Source,
)
from kasparro.etl.sources.csv_framing import decode_record, split_row
from kasparro.etl.sources.csv_read import CsvFileReader, Generation
from kasparro.models import CsvGeneration, RawCsvRecordMixin
from kasparro.setting import Setting, project_path


@dataclass(frozen=True)
class CoinNames:
    """What a CSV row says of its coin, for identity resolution."""

    name: str | None = None
    symbol: str | None = None
    asset_hint: str | None = None  # the coin's canonical id, when the feed uses it


class CsvSource(CsvFileReader, Source):
    """A CSV file read as a stream from a byte offset, so appended rows cost only themselves.

    A read resumes after the checkpoint. It checks
    first that the file still holds what was read: the same header, and the same bytes up to
    that point (a fingerprint of the whole covered prefix, so an edit anywhere above it is
    seen). A file that fails the check was replaced or edited: it is read again from the top
    as a new generation, numbered above every earlier one, and the unified upsert turns rows
    already known into no-ops while a corrected row's value wins.
    """

    # The header it expects, in order: the record's id, the coin's name, the value and its time.
    columns: ClassVar[tuple[str, str, str, str]]
    metric: ClassVar[str]  # the one metric each row observes
    currency: ClassVar[str] = "USD"
    # Its settings are named from this: CSV1 reads CSV1_PATH in CSV1_ENCODING.
    setting_prefix: ClassVar[str]
    bundled_file: ClassVar[str]  # the sample in data/ read when <PREFIX>_PATH is not set
    path_setting: ClassVar[str]
    encoding_setting: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any):
        if "metric" in cls.__dict__:
            cls.metrics = (cls.metric,)
        if "setting_prefix" in cls.__dict__:
            cls.path_setting = f"{cls.setting_prefix}_PATH"
            cls.encoding_setting = f"{cls.setting_prefix}_ENCODING"
            cls.own_settings = (
                Setting(
                    cls.path_setting,
                    project_path("data", cls.bundled_file),
                    f"the file `{cls.name}` reads",
                ),
                Setting(
                    cls.encoding_setting,
                    "utf-8",
                    f"the encoding `{cls.name}` is written in (ASCII-compatible); "
                    "other rows are rejected",
                ),
                *cls.__dict__.get("own_settings", ()),  # and whatever else the feed reads
            )
        super().__init_subclass__(**kwargs)

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._fields = FieldMap()
        self._pending: Pending | None = None
        self._generations: dict[int, Generation] = {}
        self._settled_size: int | None = None

    @property
    def path(self) -> Path:
        """Return the file this source reads."""
        return Path(self.settings[self.path_setting])

    @property
    def limit(self) -> int:
        """Return the most bytes one record may have, line ending included."""
        return self.settings["CSV_MAX_RECORD_BYTES"]

    @classmethod
    def states_anew(
        cls, stored: sa.ColumnElement[int], incoming: sa.ColumnElement[int]
    ) -> sa.ColumnElement[bool]:
        """Return whether raw row ``incoming`` may replace the observation raw row ``stored`` made.

        In raw row order, as any source; and a line read again in a later generation, with a
        text that the stored observation's generation held above the stored line, states
        nothing new: that line was superseded there by the stored one. So a file read again from
        its top does not bring back, until its later line is read, a value that its later line
        restates: the key keeps the later value throughout. An edited line states anew.
        """
        raw = cls.raw_model.__table__
        was, now = raw.alias("stated_before"), raw.alias("stated_now")
        held = raw.alias("stated_above")
        repeated = (
            sa.select(held.c.id)
            .where(
                was.c.id == stored,
                now.c.id == incoming,
                now.c.generation > was.c.generation,
                held.c.content_hash == now.c.content_hash,
                held.c.generation == was.c.generation,
                held.c.line_no < was.c.line_no,
            )
            .exists()
        )
        return sa.and_(super().states_anew(stored, incoming), ~repeated)

    def prepare(self, session: Session, raws: list[RawCsvRecordMixin]) -> None:
        """Load the header and field map of every generation ``raws`` were read in."""
        wanted = {raw.generation for raw in raws} - set(self._generations)
        if not wanted:
            return
        for row in session.scalars(
            sa.select(CsvGeneration).where(
                CsvGeneration.source == self.name, CsvGeneration.generation.in_(wanted)
            )
        ):
            fields = (
                FieldMap.from_dict(row.fields)
                if row.fields is not None
                else self._match_header(row.header)
            )
            self._generations[row.generation] = Generation.of(
                self.columns, row.header, row.header_hash, fields, row.encoding
            )

    def advance(self, cursor: dict, raws: list[RawCsvRecordMixin], report: ReadReport) -> dict:
        """Return a cursor just past the last of ``raws``, fingerprinting everything up to it."""
        raw = raws[-1]  # the newest read: the file's later records, or a later generation's
        if raw.raw_text is not None:
            breaks = raw.raw_text.count("\n")
        else:
            breaks = (raw.raw_bytes or b"").count(b"\n")
        return {
            "generation": raw.generation,
            "header_hash": self._generations[raw.generation].header_hash,
            "offset": raw.end_offset,
            "line": raw.line_no + breaks,
            "last_start": raw.start_offset,
            "last_hash": raw.content_hash,
            "fingerprint": raw.prefix_hash,
        }

    def describe(self, raw: RawCsvRecordMixin) -> tuple[str, str]:
        """Return the record's line number and its text (undecodable bytes as ``\\xNN``)."""
        if raw.raw_text is not None:
            return f"line {raw.line_no}", raw.raw_text
        encoding = self._generations[raw.generation].encoding
        return f"line {raw.line_no}", (raw.raw_bytes or b"").decode(encoding, "backslashreplace")

    def duplicates(self, session: Session, raws: list[RawCsvRecordMixin]) -> dict[int, str]:
        """Find the records of ``raws`` (stored, in id order) that repeat an earlier line's text.

        Earlier means an earlier line of the same generation, stored before or in this batch:
        one index probe per record, and only the duplicates come back.
        """
        row = self.raw_model.__table__
        found = self._with_earlier_copies(
            session, sa.func.min, row.c.id.between(raws[0].id, raws[-1].id)
        )
        return {raw_id: f"duplicate of line {line}" for raw_id, line in found}

    def content_keys(self, session: Session, raws: list[RawCsvRecordMixin]) -> dict[int, str]:
        """Return each record's content hash with its occurrence among the identical lines of
        its generation (``<hash>:1``, ``<hash>:2``, ...).

        Identical lines of one file are as many records; the same line in a later generation
        (the file edited, or replaced) is one already read. One index probe per record.
        """
        row = self.raw_model.__table__
        repeats = self._with_earlier_copies(
            session, sa.func.count, row.c.id.in_([raw.id for raw in raws])
        )
        earlier_copies = dict(repeats.tuples().all())
        return {raw.id: f"{raw.content_hash}:{earlier_copies.get(raw.id, 0) + 1}" for raw in raws}

    def _with_earlier_copies(self, session: Session, aggregate, which) -> sa.Result:
        """Return (id, ``aggregate`` of the earlier copies' line numbers) for each stored record
        matched by ``which`` that repeats an earlier line of its generation, text for text."""
        row, earlier = self.raw_model.__table__, self.raw_model.__table__.alias("earlier")
        same_text_earlier = sa.and_(
            earlier.c.content_hash == row.c.content_hash,
            earlier.c.generation == row.c.generation,
            earlier.c.line_no < row.c.line_no,
        )
        return session.execute(
            sa.select(row.c.id, aggregate(earlier.c.line_no))
            .join(earlier, same_text_earlier)
            .where(which)
            .group_by(row.c.id)
        )

    def observations(self, raw: RawCsvRecordMixin, report: ReadReport) -> list[Observation]:
        """Split a record with its generation's header and map it to observations."""
        generation = self._generations[raw.generation]
        text = raw.raw_text
        if text is None:
            if raw.truncated:
                kept = len(raw.raw_bytes or b"")
                raise InvalidValue(
                    f"line of {raw.end_offset - raw.start_offset} bytes is longer than "
                    f"CSV_MAX_RECORD_BYTES ({kept}); its first {kept} bytes are kept"
                )
            text = decode_record(raw.raw_bytes or b"", generation.encoding)  # raises why not
        values = split_row(text)
        if values is None:
            raise InvalidValue("malformed row: not valid CSV")
        if len(values) != len(generation.header):
            expected = len(generation.header)
            raise InvalidValue(f"malformed row: expected {expected} fields, got {len(values)}")
        if generation.fields.missing:
            raise InvalidValue("; ".join(generation.fields.missing.values()))
        values.append("")
        external_id, name, value, timestamp = map(str.strip, generation.pick(values))
        if not external_id:
            raise InvalidValue(f"missing {self.columns[0]}")
        names = self.coin_names(external_id, name)
        return [
            Observation(
                external_id=external_id,
                metric=self.metric,
                value=parse_amount(value),
                timestamp=parse_timestamp(timestamp),
                name=names.name,
                symbol=names.symbol,
                asset_hint=names.asset_hint,
                currency=self.currency,
            )
        ]

    @abstractmethod
    def coin_names(self, external_id: str, name: str) -> CoinNames:
        """Return what a row's id and name column say of its coin."""
