"""Streaming CSV reading shared by the CSV sources: appends, edits, replaced files, bad bytes.

Records are framed here, on bytes, rather than by the csv module, because framing decides what
may be held in memory and what waits: a record is one line, or several while a quoted field is
open, and both its bytes and its lines are bounded. A line over the limit is streamed past
and kept only in part; a record whose end is not written yet waits for the next run, unless
the file has not changed for ``CSV_SETTLE_SECONDS``: then it is read as it stands. The csv
module then splits each record into fields, with the header of the generation it was read in.
"""

import codecs
import csv
import hashlib
import os
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap, match_fields
from kasparro.etl.errors import SourceError
from kasparro.etl.parsing import InvalidValue, check_text, parse_amount, parse_timestamp
from kasparro.etl.sources.base import (
    Observation,
    Pending,
    RawRow,
    ReadReport,
    Source,
)
from kasparro.models import Checkpoint, CsvGeneration, RawCsvRecordMixin
from kasparro.setting import Setting, project_path

MAX_RECORD_LINES = 100  # a quoted field spanning more lines than this is a stray quote
READ_CHUNK = 64 * 1024  # what an over-long line or a fingerprinted prefix is read in
OPEN_QUOTE = "a quoted field is still open at the end of the file"
NO_LINE_END = "the last line has no line ending yet"


_FIELD_END = re.compile(rb"[,\r\n]")


def ends_in_quotes(data: bytes, inside: bool = False) -> bool:
    """Return whether ``data`` ends inside a quoted field, as the csv module would read it.

    A quote opens a quoted field only where a field starts; elsewhere it is an ordinary
    character (``Coin 5" A``). Inside a quoted field, ``""`` is a quote and ``"`` closes it.
    """
    if b'"' not in data:  # most lines: nothing opens or closes
        return inside
    at, field_start = 0, not inside
    while at < len(data):
        if inside:
            close = data.find(b'"', at)
            if close < 0:
                return True
            if data[close + 1 : close + 2] == b'"':
                at = close + 2
                continue
            inside, at, field_start = False, close + 1, False
        elif field_start and data[at : at + 1] == b'"':
            inside, at = True, at + 1
        else:
            end = _FIELD_END.search(data, at)
            if end is None:
                return False
            at, field_start = end.end(), True
    return inside


def decode_record(body: bytes, encoding: str) -> str:
    """Return a record's text; raise InvalidValue saying why no database could hold it as given."""
    if (at := body.find(b"\x00")) >= 0:
        raise InvalidValue(f"contains a NUL byte at byte {at}")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidValue(f"not valid {encoding}: {exc.reason} at byte {exc.start}") from None
    try:
        check_text("the row", text, len(text))  # what some encodings decode to
    except InvalidValue as exc:
        raise InvalidValue(f"decoded as {encoding}, {exc}") from None
    return text


def split_row(text: str) -> list[str] | None:
    """Split one CSV record into fields; None when it is not valid CSV."""
    try:
        return next(csv.reader([text], strict=False), [])
    except csv.Error:
        return None


def content_hash(body: bytes) -> str:
    """Return the hash that identifies a record's bytes, line ending excluded."""
    return hashlib.sha256(body.rstrip(b"\r\n")).hexdigest()


class RecordHash:
    """``content_hash`` of a record fed in pieces: trailing line-end bytes are held back."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self._held = b""

    def update(self, piece: bytes) -> None:
        """Add the next bytes of the record."""
        body = piece.rstrip(b"\r\n")
        if not body:  # only line-end bytes so far: they count if more text follows
            self._held += piece
            return
        self._hash.update(self._held)
        self._hash.update(body)
        self._held = piece[len(body) :]

    def hexdigest(self) -> str:
        """Return the hash of everything fed so far, without the trailing line ending."""
        return self._hash.hexdigest()


def ascii_compatible_encoding(name: str, setting: str) -> str:
    """Return the codec name of ``name``; it must frame lines and fields as ASCII does."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise SourceError(f"{setting}={name!r} is not an encoding this system knows") from None
    if codec == "utf-8-sig":  # a byte-order mark is dropped from the header in any case
        codec = "utf-8"
    if 'id,"x"\r\n'.encode(codec) != b'id,"x"\r\n':
        raise SourceError(f"{setting}={name!r} is not ASCII-compatible; CSV lines cannot be framed")
    return codec


@dataclass(frozen=True)
class Generation:
    """What reading a file from its top learned: the header its rows are split with."""

    header: list[str]
    header_hash: str
    fields: FieldMap
    encoding: str
    # Picks the expected fields from a row with one empty field appended: a field the header
    # lacks is picked from there.
    pick: Callable[[list[str]], tuple[str, ...]]

    @classmethod
    def of(
        cls,
        expected: tuple[str, ...],
        header: list[str],
        header_hash: str,
        fields: FieldMap,
        encoding: str,
    ) -> "Generation":
        """Return a generation that finds each ``expected`` field in the last column of its name."""
        last = {name: at for at, name in enumerate(header)}
        absent = len(header)
        pick = itemgetter(*(last.get(fields.found_as.get(name, name), absent) for name in expected))
        return cls(header, header_hash, fields, encoding, pick)


@dataclass(frozen=True)
class CoinNames:
    """What a CSV row says of its coin, for identity resolution."""

    name: str | None = None
    symbol: str | None = None
    asset_hint: str | None = None  # the coin's canonical id, when the feed uses it


@dataclass(frozen=True)
class Record:
    """One record framed from the file: where it is and its bytes (a prefix, if truncated)."""

    start: int
    end: int
    line: int
    data: bytes
    truncated: bool
    digest: str
    prefix_hash: str


class CsvSource(Source):
    """A CSV file read as a stream from a byte offset, so appended rows cost only themselves.

    A read resumes after the newest record stored, or else after the checkpoint. It checks
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

    def read(self, session: Session, checkpoint: Checkpoint | None) -> Iterator[RawRow]:
        """Yield the records after those already stored, or every record of a changed file."""
        encoding = ascii_compatible_encoding(
            self.settings[self.encoding_setting], self.encoding_setting
        )
        resume = self._resume_point(session, checkpoint)
        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot open {self.path}: {exc.strerror}") from None
        with handle:
            # A file nobody has written to for a while is complete, last line included, up to
            # the size it has now: what a producer adds during the read is not complete yet.
            status = os.fstat(handle.fileno())
            quiet = time.time() - status.st_mtime >= self.settings["CSV_SETTLE_SECONDS"]
            self._settled_size = status.st_size if quiet else None
            header_line = handle.readline(self.limit + 1)
            if not header_line:
                raise SourceError(f"{self.path.name} has no header line")
            if len(header_line) > self.limit:
                raise SourceError(f"{self.path.name}: header is longer than CSV_MAX_RECORD_BYTES")
            if not header_line.endswith(b"\n"):
                self._pending = Pending(line=1, bytes=len(header_line), reason=NO_LINE_END)
                return
            header = self._header(header_line, encoding)
            header_hash = content_hash(header_line)
            self._fields = self._match_header(header)
            prefix = hashlib.sha256()
            place = self._continues(handle, resume, header_hash, prefix)
            if place is None:
                prefix = hashlib.sha256(header_line)
                number, line = None, 1
                handle.seek(len(header_line))
            else:
                number, line = place
                self._finish_last_line(handle, prefix)
            for record in self._records(handle, prefix, line):
                if number is None:  # numbered only once there is a record to keep
                    number = self._new_generation(
                        session,
                        resume,
                        Generation.of(self.columns, header, header_hash, self._fields, encoding),
                    )
                yield self._raw_row(record, number, encoding)

    def report(self) -> ReadReport:
        """Return the field map of the read that just ended, and what is left waiting."""
        return ReadReport(fields=self._fields, pending=self._pending)

    def _header(self, line: bytes, encoding: str) -> list[str]:
        codec = "utf-8-sig" if encoding == "utf-8" else encoding
        try:
            text = line.decode(codec)
        except UnicodeDecodeError:
            raise SourceError(f"{self.path.name}: header is not valid {encoding}") from None
        header = [name.strip() for name in next(csv.reader([text]), [])]
        if not any(header):
            raise SourceError(f"{self.path.name} has no header line")
        return header

    def _match_header(self, header: list[str]) -> FieldMap:
        fields = match_fields(self.columns, header, self.settings["SCHEMA_DRIFT_THRESHOLD"])
        in_file_order = [name for name in header if name in self.columns]
        if in_file_order != [name for name in self.columns if name in header]:
            fields.events.append({"kind": "reordered", "found": header, "action": "mapped by name"})
        return fields

    def _resume_point(self, session: Session, checkpoint: Checkpoint | None) -> dict | None:
        # Records read but not transformed yet (a failed run) are not read again.
        model = self.raw_model
        newest = session.scalar(
            sa.select(model)
            .where(model.id > (checkpoint.last_raw_id if checkpoint else 0))
            .order_by(model.id.desc())
            .limit(1)
        )
        if newest is None:
            return checkpoint.cursor if checkpoint else None
        self.prepare(session, [newest])
        return self.advance({}, [newest], ReadReport())

    @staticmethod
    def _continues(
        handle: BinaryIO, resume: dict | None, header_hash: str, prefix
    ) -> tuple[int, int] | None:
        """Return (generation, line) to read on from, or None when the file must be re-read."""
        if not resume or resume.get("header_hash") != header_hash:
            return None
        offset = resume["offset"]
        if os.fstat(handle.fileno()).st_size < offset:
            return None
        last = RecordHash()
        handle.seek(0)
        while handle.tell() < offset:
            chunk = handle.read(min(READ_CHUNK, offset - handle.tell()))
            prefix.update(chunk)
            start = handle.tell() - len(chunk)
            if resume.get("fingerprint") is None and handle.tell() > resume["last_start"]:
                last.update(chunk[max(0, resume["last_start"] - start) :])
        if resume.get("fingerprint") is not None:
            same = prefix.hexdigest() == resume["fingerprint"]
        else:  # a checkpoint from before fingerprints: its last record must be unchanged
            same = resume.get("last_start") is None or last.hexdigest() == resume["last_hash"]
        return (resume["generation"], resume["line"]) if same else None

    @staticmethod
    def _finish_last_line(handle: BinaryIO, prefix) -> None:
        # A last line read without its line ending (the file was at rest) gets it later: that
        # ending belongs to the line read, not to a blank line of its own.
        offset = handle.tell()
        handle.seek(offset - 1)
        if handle.read(1) == b"\n":
            return
        ending = handle.read(2)
        ending = b"\r\n" if ending == b"\r\n" else b"\n" if ending[:1] == b"\n" else b""
        prefix.update(ending)
        handle.seek(offset + len(ending))

    def _complete_at_end(self, handle: BinaryIO) -> bool:
        """Return whether what was read up to the end of the file may be taken as complete."""
        return self._settled_size is not None and handle.tell() <= self._settled_size

    def _records(self, handle: BinaryIO, prefix, line: int) -> Iterator[Record]:
        """Frame records from the handle's position; stop at one whose end is not written yet."""
        self._pending = None
        position = handle.tell()  # kept by counting: asking the file for it costs a system call
        while True:
            start = position
            first = handle.readline(self.limit + 1)
            if not first:
                return
            if len(first) > self.limit:
                record = self._overlong(handle, first, start, line + 1, prefix)
                if record is None:
                    return
                line += 1
                position = handle.tell()
                yield record
                continue
            position = start + len(first)
            if not first.endswith(b"\n") and not self._complete_at_end(handle):
                reason = OPEN_QUOTE if ends_in_quotes(first) else NO_LINE_END
                self._pending = Pending(line=line + 1, bytes=len(first), reason=reason)
                return
            data, lines = first, 1
            if ends_in_quotes(first):
                data, lines = self._quoted(handle, first, start, line + 1)
                if data is None:
                    return
                position = handle.tell()
            prefix.update(data)
            line += lines
            if data.strip():  # a blank line is not a record
                yield Record(
                    start=start,
                    end=start + len(data),
                    line=line - lines + 1,
                    data=data,
                    truncated=False,
                    digest=content_hash(data),
                    prefix_hash=prefix.hexdigest(),
                )

    def _quoted(
        self, handle: BinaryIO, first: bytes, start: int, line: int
    ) -> tuple[bytes | None, int]:
        # A quoted field may hold line breaks: take whole lines while it is open.
        data, lines, inside = first, 1, True
        while inside and lines < MAX_RECORD_LINES:
            room = self.limit - len(data)
            more = handle.readline(room + 1)
            if len(more) > room:
                break  # over the limit: the quote was a stray one
            inside = ends_in_quotes(more, inside=True)
            if not more.endswith(b"\n"):  # the end of the file: the rest may not be written yet
                if self._complete_at_end(handle):  # ... unless the file is complete as it is
                    data, lines = data + more, lines + bool(more)
                    break
                data += more
                reason = OPEN_QUOTE if inside else NO_LINE_END
                self._pending = Pending(line=line, bytes=len(data), reason=reason)
                return None, 0
            data += more
            lines += 1
        if inside:  # a stray quote: its line alone is the record
            handle.seek(start + len(first))
            return first, 1
        return data, lines

    def _overlong(
        self, handle: BinaryIO, first: bytes, start: int, line: int, prefix
    ) -> Record | None:
        # Streamed to its end without being held: only its first bytes are kept.
        digest = RecordHash()
        piece = first
        while True:
            digest.update(piece)
            prefix.update(piece)
            if piece.endswith(b"\n"):
                break
            piece = handle.readline(READ_CHUNK)
            if not piece and self._complete_at_end(handle):
                break
            if not piece:
                size = handle.tell() - start
                self._pending = Pending(line=line, bytes=size, reason=NO_LINE_END)
                return None
        return Record(
            start=start,
            end=handle.tell(),
            line=line,
            data=first[: self.limit],
            truncated=True,
            digest=digest.hexdigest(),
            prefix_hash=prefix.hexdigest(),
        )

    def _raw_row(self, record: Record, generation: int, encoding: str) -> RawRow:
        body = record.data if record.truncated else record.data.rstrip(b"\r\n")
        text = None
        if not record.truncated:
            try:
                text = decode_record(body, encoding)
            except InvalidValue:
                pass  # kept as bytes; the transform rejects it with the reason
        return RawRow(
            record_key=f"{generation}:{record.line}",
            payload=None,
            columns={
                "generation": generation,
                "content_hash": record.digest,
                "line_no": record.line,
                "start_offset": record.start,
                "end_offset": record.end,
                "raw_text": text,
                "raw_bytes": None if text is not None else body,
                "truncated": record.truncated,
                "prefix_hash": record.prefix_hash,
            },
        )

    def _new_generation(self, session: Session, resume: dict | None, read: Generation) -> int:
        latest = session.scalar(
            sa.select(sa.func.max(CsvGeneration.generation)).where(
                CsvGeneration.source == self.name
            )
        )
        number = max(latest or 0, (resume or {}).get("generation", 0)) + 1
        session.add(
            CsvGeneration(
                source=self.name,
                generation=number,
                header=read.header,
                header_hash=read.header_hash,
                fields=read.fields.to_dict(),
                encoding=read.encoding,
            )
        )
        session.flush()
        self._generations[number] = read
        return number

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
        row, earlier = self.raw_model.__table__, self.raw_model.__table__.alias("earlier")
        found = session.execute(
            sa.select(row.c.id, sa.func.min(earlier.c.line_no))
            .join(
                earlier,
                sa.and_(
                    earlier.c.content_hash == row.c.content_hash,
                    earlier.c.generation == row.c.generation,
                    earlier.c.line_no < row.c.line_no,
                ),
            )
            .where(row.c.id.between(raws[0].id, raws[-1].id))
            .group_by(row.c.id)
        )
        return {raw_id: f"duplicate of line {line}" for raw_id, line in found}

    def content_keys(self, session: Session, raws: list[RawCsvRecordMixin]) -> dict[int, str]:
        """Return each record's content hash with its occurrence among the identical lines of
        its generation (``<hash>:1``, ``<hash>:2``, ...).

        Identical lines of one file are as many records; the same line in a later generation
        (the file edited, or replaced) is one already read. One index probe per record.
        """
        row, earlier = self.raw_model.__table__, self.raw_model.__table__.alias("earlier")
        repeats = session.execute(
            sa.select(row.c.id, sa.func.count())
            .join(
                earlier,
                sa.and_(
                    earlier.c.content_hash == row.c.content_hash,
                    earlier.c.generation == row.c.generation,
                    earlier.c.line_no < row.c.line_no,
                ),
            )
            .where(row.c.id.in_([raw.id for raw in raws]))
            .group_by(row.c.id)
        )
        earlier_copies = dict(repeats.tuples().all())
        return {raw.id: f"{raw.content_hash}:{earlier_copies.get(raw.id, 0) + 1}" for raw in raws}

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
