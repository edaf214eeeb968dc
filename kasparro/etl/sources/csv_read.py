"""Reading a CSV file as a stream of raw rows: offsets, fingerprints and generations.

Records are framed by ``csv_framing``. A line over the limit is streamed past and kept only in
part; a record whose end is not written yet waits for the next run, unless the file has not
changed for ``CSV_SETTLE_SECONDS``: then it is read as it stands.
"""

import csv
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap, match_fields
from kasparro.etl.errors import SourceError
from kasparro.etl.parsing import InvalidValue
from kasparro.etl.sources.base import Pending, RawRow, ReadReport
from kasparro.etl.sources.csv_framing import (
    MAX_RECORD_LINES,
    NO_LINE_END,
    OPEN_QUOTE,
    READ_CHUNK,
    Record,
    RecordHash,
    ascii_compatible_encoding,
    content_hash,
    decode_record,
    ends_in_quotes,
)
from kasparro.models import Checkpoint, CsvGeneration


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


class CsvFileReader:
    """The read side of a CSV source: a file read from a byte offset, so appended rows cost
    only themselves (``CsvSource`` adds what turns its rows into observations).

    A read resumes after the checkpoint. It checks
    first that the file still holds what was read: the same header, and the same bytes up to
    that point (a fingerprint of the whole covered prefix, so an edit anywhere above it is
    seen). A file that fails the check was replaced or edited: it is read again from the top
    as a new generation, numbered above every earlier one.
    """

    def read(self, session: Session, checkpoint: Checkpoint | None) -> Iterator[RawRow]:
        """Yield the records after those already stored, or every record of a changed file."""
        encoding = ascii_compatible_encoding(
            self.settings[self.encoding_setting], self.encoding_setting
        )
        resume = checkpoint.cursor if checkpoint else None
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
        handle.seek(0)
        while handle.tell() < offset:
            prefix.update(handle.read(min(READ_CHUNK, offset - handle.tell())))
        same = prefix.hexdigest() == resume.get("fingerprint")
        return (resume["generation"], resume["line"]) if same else None

    def fingerprinted(self, cursor: dict | None) -> dict | None:
        """Return ``cursor`` with the fingerprint a checkpoint from before fingerprints lacks.

        A one-off for such a checkpoint (``flask etl load-left-over``): the file must still hold
        the record it last read where it read it. None when there is nothing to add, or the file
        changed: its next read then starts again from the top, as after any edit.
        """
        if not cursor or cursor.get("fingerprint") is not None:
            return None
        offset, last_start = cursor["offset"], cursor.get("last_start")
        prefix, last = hashlib.sha256(), RecordHash()
        try:
            handle = open(self.path, "rb")
        except OSError:
            return None
        with handle:
            if os.fstat(handle.fileno()).st_size < offset:
                return None
            while handle.tell() < offset:
                chunk = handle.read(min(READ_CHUNK, offset - handle.tell()))
                prefix.update(chunk)
                start = handle.tell() - len(chunk)
                if last_start is not None and handle.tell() > last_start:
                    last.update(chunk[max(0, last_start - start) :])
        if last_start is not None and last.hexdigest() != cursor["last_hash"]:
            return None
        return {**cursor, "fingerprint": prefix.hexdigest()}

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
