"""Batches and their records.

A batch keeps the host's one flat copy of the payloads; a record is a
view of its slice, decoded only when asked for (`value`, `record`) and
then kept.
"""

import json
from dataclasses import dataclass
from typing import Any, Iterator, List

from . import times
from .msgpack import DecodeError, packb, unpackb
from .records import IamRecord, RecordError, TykRecord

__all__ = ["Batch", "Record", "Event", "NewRecord", "BadRecord", "encode_value"]

_TYPED = {"iam": IamRecord, "tyk": TykRecord}


class BadRecord(ValueError):
    """A record's payload does not decode (or does not fit its schema's
    typed record). Unhandled in a sink's `write`, it reports just that
    record as failed, not retryable, so the host dead-letters it."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"record {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass
class Event:
    """One record's place in a batch, as the WIT `event`."""

    id: int
    #: Unix milliseconds.
    timestamp: int
    offset: int
    len: int


@dataclass
class NewRecord:
    """A record of a filter's `Replace`: encoded payload, id and time."""

    payload: bytes
    id: int
    #: Unix milliseconds.
    timestamp: int


def encode_value(value: Any, encoding: str) -> bytes:
    """`value` (a dict, a typed record, or bytes kept as they are) as one
    payload in `encoding`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    to_value = getattr(value, "to_value", None)
    if to_value is not None:
        value = to_value(encoding)
    if encoding == "json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return packb(value)


class Record:
    """One record of a batch."""

    __slots__ = ("_batch", "index", "_event", "_value", "_record")

    def __init__(self, batch, index):
        self._batch = batch
        self.index = index
        self._event = batch.events[index]
        self._value = None
        self._record = None

    @property
    def id(self) -> int:
        """Stable across re-deliveries (xxh3 of the producer's bytes)."""
        return self._event.id

    @property
    def timestamp_ms(self) -> int:
        return self._event.timestamp

    @property
    def time(self):
        """The record's time as a UTC datetime."""
        return times.from_unix_millis(self._event.timestamp)

    @property
    def payload(self) -> bytes:
        """The raw payload in the batch's encoding."""
        e = self._event
        return self._batch.payloads[e.offset : e.offset + e.len]

    @property
    def value(self) -> Any:
        """The decoded payload: a dict for JSON and MessagePack maps.
        Raises `BadRecord`."""
        if self._value is None:
            self._value = self._batch._decode(self.index)
        return self._value

    @property
    def record(self):
        """The typed record for the `iam` and `tyk` schemas (a plain dict for
        `generic`). Raises `BadRecord`."""
        if self._record is None:
            cls = _TYPED.get(self._batch.schema)
            if cls is None:
                self._record = self.value
            else:
                try:
                    self._record = cls.from_value(self.value)
                except RecordError as e:
                    raise BadRecord(self.index, str(e)) from None
        return self._record

    def replaced(self, value: Any) -> NewRecord:
        """A new record with this one's id and time and `value` (a dict, a
        typed record or payload bytes) as its payload, for `Replace`."""
        return NewRecord(encode_value(value, self._batch.encoding), self.id, self.timestamp_ms)

    def __repr__(self):
        return f"Record(index={self.index}, id={self.id}, len={self._event.len})"


class Batch:
    """A batch: `len(batch)`, `for rec in batch`, `batch[i]`.

    `schema` is `iam`, `tyk` or `generic`; `encoding` is `json` or `msgpack`
    (what the plugin's `accepts` asked for). An empty batch is a tick (see
    the pump's `tick_interval`).
    """

    __slots__ = ("schema", "encoding", "payloads", "events")

    def __init__(self, schema: str, encoding: str, payloads: bytes, events: List[Event]):
        self.schema = schema
        self.encoding = encoding
        self.payloads = payloads
        self.events = events

    def __len__(self):
        return len(self.events)

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self.events)):
            yield Record(self, i)

    def __getitem__(self, i) -> Record:
        if i < 0:
            i += len(self.events)
        if not 0 <= i < len(self.events):
            raise IndexError(f"record {i} of a batch of {len(self.events)}")
        return Record(self, i)

    def _decode(self, i):
        e = self.events[i]
        if e.offset + e.len > len(self.payloads):
            raise BadRecord(i, f"payload {e.offset}+{e.len} is past the batch's {len(self.payloads)} bytes")
        try:
            if self.encoding == "json":
                return json.loads(self.payloads[e.offset : e.offset + e.len])
            return unpackb(memoryview(self.payloads)[e.offset : e.offset + e.len])
        except (ValueError, DecodeError, UnicodeDecodeError) as err:
            raise BadRecord(i, f"not {self.encoding}: {err}") from None

    def values(self) -> Iterator[Any]:
        """Every decoded payload, in order: the fast path for plugins that
        only need the maps."""
        for i in range(len(self.events)):
            yield self._decode(i)

    def records(self) -> Iterator[Any]:
        """Every typed record (see `Record.record`), in order."""
        for rec in self:
            yield rec.record

    def __repr__(self):
        return f"Batch(schema={self.schema!r}, encoding={self.encoding!r}, records={len(self.events)})"
