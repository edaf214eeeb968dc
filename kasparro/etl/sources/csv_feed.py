"""Streaming CSV reading shared by the CSV sources: offsets, appends and replaced files."""

import csv
import hashlib
import os
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap, match_fields
from kasparro.etl.parsing import InvalidValue
from kasparro.etl.sources.base import Observation, RawRow, Source, SourceError
from kasparro.models import RawCsvRecordMixin

MAX_RECORD_LINES = 100  # a quoted field spanning more lines than this is a stray quote


def split_row(text: str) -> list[str] | None:
    """Split one CSV record into fields; None when it is not valid CSV."""
    try:
        return next(csv.reader([text], strict=False), [])
    except csv.Error:
        return None


def content_hash(body: bytes) -> str:
    """Return the hash that identifies a row's text, line ending excluded."""
    return hashlib.sha256(body.rstrip(b"\r\n")).hexdigest()


class CsvSource(Source):
    """A CSV file read as a stream from a byte offset, so appended rows cost only themselves.

    The cursor records the file's header hash, the byte offset after the last row covered and
    that row's start and hash. A file whose header or last covered row no longer matches, or that
    is shorter than the offset, was replaced rather than appended to: it is read again from the
    top as a new generation, and the unified upsert turns re-read rows into no-ops.
    """

    path_setting: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._context: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        """Return the file this source reads."""
        return Path(self.settings[self.path_setting])

    def read(self, cursor: dict[str, Any] | None) -> Iterator[RawRow]:
        """Yield the rows after the cursor, or every row if the file was replaced."""
        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot open {self.path}: {exc.strerror}") from None
        with handle:
            header_line = handle.readline()
            header = self._header(header_line)
            header_hash = content_hash(header_line)
            if cursor and self._continues(handle, cursor, header_hash):
                generation, offset, line_no = cursor["generation"], cursor["offset"], cursor["line"]
            else:
                generation = (cursor or {}).get("generation", 0) + 1
                offset, line_no = len(header_line), 1
            self._context = {
                "generation": generation,
                "header_hash": header_hash,
                "header": header,
                "fields": self._match_header(header).to_dict(),
            }
            handle.seek(offset)
            yield from self._rows(handle, header, generation, line_no)

    def context(self) -> dict[str, Any]:
        """Return the generation and header of the read that just ended."""
        return self._context

    def _header(self, line: bytes) -> list[str]:
        try:
            text = line.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SourceError(f"{self.path.name}: header is not valid UTF-8") from None
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

    @staticmethod
    def _continues(handle: BinaryIO, cursor: dict[str, Any], header_hash: str) -> bool:
        if cursor.get("header_hash") != header_hash:
            return False
        if os.fstat(handle.fileno()).st_size < cursor["offset"]:
            return False
        if cursor.get("last_start") is None:
            return True
        handle.seek(cursor["last_start"])
        last_row = handle.read(cursor["offset"] - cursor["last_start"])
        return content_hash(last_row) == cursor["last_hash"]

    @staticmethod
    def _rows(
        handle: BinaryIO, header: list[str], generation: int, line_no: int
    ) -> Iterator[RawRow]:
        while True:
            start = handle.tell()
            chunk = handle.readline()
            if not chunk.endswith(b"\n"):
                return  # the end, or a last line still being written: read once it is complete
            line_no += 1
            first_line, first_end = line_no, handle.tell()
            # A quoted field may hold a line break: take whole lines until the quotes balance.
            while chunk.count(b'"') % 2 and line_no - first_line < MAX_RECORD_LINES:
                more = handle.readline()
                if not more.endswith(b"\n"):
                    break
                chunk += more
                line_no += 1
            if chunk.count(b'"') % 2:  # a stray quote: the first line alone is the record
                handle.seek(first_end)
                chunk, line_no = chunk[: first_end - start], first_line
            if not chunk.strip():
                continue
            text = chunk.rstrip(b"\r\n").decode("utf-8", errors="replace")
            fields = split_row(text)
            width_ok = fields is not None and len(fields) == len(header)
            yield RawRow(
                record_key=f"{generation}:{first_line}",
                payload=dict(zip(header, fields, strict=True)) if width_ok else None,
                columns={
                    "generation": generation,
                    "content_hash": content_hash(chunk),
                    "line_no": first_line,
                    "start_offset": start,
                    "end_offset": handle.tell(),
                    "raw_text": text,
                },
            )

    def advance(self, cursor: dict, raw: RawCsvRecordMixin, context: dict[str, Any]) -> dict:
        """Return a cursor just past ``raw``."""
        return {
            "generation": raw.generation,
            "header_hash": context["header_hash"],
            "offset": raw.end_offset,
            "line": raw.line_no + raw.raw_text.count("\n"),
            "last_start": raw.start_offset,
            "last_hash": raw.content_hash,
        }

    def describe(self, raw: RawCsvRecordMixin) -> tuple[str, str]:
        """Return the row's line number and text."""
        return f"line {raw.line_no}", raw.raw_text

    def external_id(self, raw: RawCsvRecordMixin, context: dict[str, Any]) -> str | None:
        """Return the row's first field, its id."""
        fields = FieldMap.from_dict(context.get("fields"))
        return fields.get(raw.payload or {}, self.columns[0])

    def duplicates(self, session: Session, raws: list[RawCsvRecordMixin]) -> dict[int, str]:
        """Find rows whose text repeats an earlier row of the same file generation."""
        model = self.raw_model
        first_lines = {
            (generation, digest): line
            for generation, digest, line in session.execute(
                sa.select(model.generation, model.content_hash, sa.func.min(model.line_no))
                .where(model.content_hash.in_({raw.content_hash for raw in raws}))
                .group_by(model.generation, model.content_hash)
            )
        }
        return {
            raw.id: f"duplicate of line {first}"
            for raw in raws
            if (first := first_lines[(raw.generation, raw.content_hash)]) < raw.line_no
        }

    def observations(self, raw: RawCsvRecordMixin, context: dict[str, Any]) -> list[Observation]:
        """Turn one row into observations; a row of the wrong width is rejected."""
        if raw.payload is None:
            fields = split_row(raw.raw_text)
            if fields is None:
                raise InvalidValue("malformed row: not valid CSV")
            expected = len(context["header"])
            raise InvalidValue(f"malformed row: expected {expected} fields, got {len(fields)}")
        field_map = FieldMap.from_dict(context.get("fields"))
        if field_map.missing:
            raise InvalidValue("; ".join(field_map.missing.values()))
        fields = {name: (field_map.get(raw.payload, name) or "").strip() for name in self.columns}
        if not fields[self.columns[0]]:
            raise InvalidValue(f"missing {self.columns[0]}")
        return self.row_observations(fields)

    @abstractmethod
    def row_observations(self, fields: dict[str, str]) -> list[Observation]:
        """Map one well-formed row's fields to observations."""
