"""Run a plugin under plain pytest, without building a component.

    from pumphouse_sdk.testing import Harness, make_batch

    def test_drops_health_checks():
        h = Harness(HealthFilter, {"paths": ["/health"]})
        batch = make_batch("tyk", [{"Path": "/health"}, {"Path": "/api"}])
        assert h.process(batch) == Keep([1])

`Harness` calls the plugin through the same export glue the component
uses, with look-alikes of the generated WIT types, and records what the
plugin sent to the host: `logs`, `counters`, `gauges`, `histograms` and
the `kv` store.
"""

import json
from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from . import _glue, host
from .batch import Batch, Event, NewRecord, encode_value
from .errors import ConfigError, Failure, Fatal, InvalidBatch, Partial, Retry, TooLarge
from .host import KvError
from .plugin import KEEP_ALL, Keep, Replace

__all__ = ["Harness", "make_batch", "PluginError"]


# Look-alikes of the generated binding types (same names and fields as
# componentize-py generates from wit/pump.wit).
class _Encoding(Enum):
    MSGPACK = 0
    JSON = 1


class _Schema(Enum):
    IAM = 0
    TYK = 1
    GENERIC = 2


@dataclass
class _PluginInfo:
    name: str
    version: str
    accepts: _Encoding


@dataclass
class _Event:
    id: int
    timestamp: int
    offset: int
    len: int


@dataclass
class _Batch:
    schema: _Schema
    encoding: _Encoding
    payloads: bytes
    events: List[_Event]


@dataclass
class _FailedEvent:
    index: int
    reason: str
    retryable: bool


@dataclass
class _Value:
    value: Any


class _WriteError_Retry(_Value):
    pass


class _WriteError_Partial(_Value):
    pass


class _WriteError_InvalidBatch(_Value):
    pass


@dataclass
class _WriteError_TooLarge:
    pass


class _WriteError_Fatal(_Value):
    pass


@dataclass
class _Verdict_KeepAll:
    pass


class _Verdict_Keep(_Value):
    pass


class _Verdict_Replace(_Value):
    pass


@dataclass(frozen=True)
class _Err(Exception):
    value: Any


WIT = SimpleNamespace(
    Err=_Err,
    Encoding=_Encoding,
    Schema=_Schema,
    PluginInfo=_PluginInfo,
    Event=_Event,
    Batch=_Batch,
    FailedEvent=_FailedEvent,
    WriteError_Retry=_WriteError_Retry,
    WriteError_Partial=_WriteError_Partial,
    WriteError_InvalidBatch=_WriteError_InvalidBatch,
    WriteError_TooLarge=_WriteError_TooLarge,
    WriteError_Fatal=_WriteError_Fatal,
    Verdict_KeepAll=_Verdict_KeepAll,
    Verdict_Keep=_Verdict_Keep,
    Verdict_Replace=_Verdict_Replace,
)


class PluginError(Exception):
    """`init` or `process` returned an error (the component's `err`)."""


def make_batch(schema: str, values: List[Any], encoding: str = "json", ids=None, timestamps=None) -> Batch:
    """A batch of `values` (dicts, typed records, or payload bytes kept as
    they are), encoded as the host would encode them for a plugin that
    accepts `encoding`. Ids default to 1, 2, ...; timestamps (unix ms) to 0."""
    payloads = bytearray()
    events = []
    for i, v in enumerate(values):
        p = encode_value(v, encoding)
        rid = ids[i] if ids else i + 1
        ts = timestamps[i] if timestamps else 0
        events.append(Event(rid, ts, len(payloads), len(p)))
        payloads += p
    return Batch(schema, encoding, bytes(payloads), events)


class _FakeHost:
    def __init__(self):
        self.logs = []
        self.counters: Dict[tuple, int] = {}
        self.gauges: Dict[tuple, float] = {}
        self.histograms: Dict[tuple, List[float]] = {}
        self.kv: Dict[str, bytes] = {}
        #: Set to a message to make every kv call fail, as when Redis is down.
        self.kv_down: Optional[str] = None

    def log(self, level, message):
        self.logs.append((level, message))

    @staticmethod
    def _key(name, labels):
        return (name, tuple(sorted(labels)))

    def counter_add(self, name, value, labels):
        k = self._key(name, labels)
        self.counters[k] = self.counters.get(k, 0) + value

    def gauge_set(self, name, value, labels):
        self.gauges[self._key(name, labels)] = value

    def histogram_observe(self, name, values, labels):
        self.histograms.setdefault(self._key(name, labels), []).extend(values)

    def kv_get(self, key):
        if self.kv_down:
            raise KvError(f"kv get {key!r}: {self.kv_down}")
        return self.kv.get(key)

    def kv_commit(self, writes):
        if self.kv_down:
            raise KvError(f"kv commit: {self.kv_down}")
        for w in writes:
            if w.value is None:
                self.kv.pop(w.key, None)
            else:
                self.kv[w.key] = bytes(w.value)


def _to_wit(batch: Batch):
    return _Batch(
        _Schema[batch.schema.upper()],
        _Encoding[batch.encoding.upper()],
        batch.payloads,
        [_Event(e.id, e.timestamp, e.offset, e.len) for e in batch.events],
    )


def _exception(err):
    """The SDK exception a WIT write-error stands for."""
    if isinstance(err, _WriteError_Retry):
        return Retry(err.value)
    if isinstance(err, _WriteError_Partial):
        return Partial([Failure(f.index, f.reason, f.retryable) for f in err.value])
    if isinstance(err, _WriteError_InvalidBatch):
        return InvalidBatch(err.value)
    if isinstance(err, _WriteError_TooLarge):
        return TooLarge()
    return Fatal(err.value)


class Harness:
    """One plugin instance, as the host drives it: describe, then init with
    `config` (a dict, sent as JSON text like the pump's `config` table)."""

    def __init__(self, cls, config: Optional[dict] = None):
        self.host = _FakeHost()
        host._set_backend(self.host)
        plugin_export, self._export_cls = _glue.exports(cls, WIT)
        self._plugin = plugin_export()
        self.info = self._plugin.describe()
        self.accepts = self.info.accepts.name.lower()
        try:
            self._plugin.init(json.dumps(config or {}))
        except _Err as e:
            raise ConfigError(e.value) from None
        self._export = self._export_cls()

    # What the plugin sent to the host.
    @property
    def logs(self):
        return self.host.logs

    @property
    def counters(self):
        return self.host.counters

    @property
    def gauges(self):
        return self.host.gauges

    @property
    def histograms(self):
        return self.host.histograms

    @property
    def kv(self):
        return self.host.kv

    def counter(self, name, **labels) -> int:
        """The value of counter `name` with exactly these labels."""
        return self.host.counters.get(self.host._key(name, [(k, str(v)) for k, v in labels.items()]), 0)

    def batch(self, schema: str, values: List[Any], **kw) -> Batch:
        """`make_batch` in this plugin's `accepts` encoding."""
        return make_batch(schema, values, self.accepts, **kw)

    def write(self, batch: Batch) -> None:
        """Calls the sink's `write`; raises the write error it returned."""
        host._set_backend(self.host)
        try:
            self._export.write(_to_wit(batch))
        except _Err as e:
            raise _exception(e.value) from None

    def process(self, batch: Batch):
        """Calls the filter's `process`: `KEEP_ALL`, `Keep(indices)` or
        `Replace([NewRecord...])`; raises `PluginError` for an `err`."""
        host._set_backend(self.host)
        try:
            v = self._export.process(_to_wit(batch))
        except _Err as e:
            raise PluginError(e.value) from None
        if isinstance(v, _Verdict_KeepAll):
            return KEEP_ALL
        if isinstance(v, _Verdict_Keep):
            return Keep(list(v.value))
        b = v.value
        return Replace([NewRecord(b.payloads[e.offset : e.offset + e.len], e.id, e.timestamp) for e in b.events])

    def kept(self, batch: Batch) -> Batch:
        """The batch that goes on after `process`, as the host builds it."""
        v = self.process(batch)
        if v is KEEP_ALL:
            return batch
        if isinstance(v, Keep):
            return Batch(batch.schema, batch.encoding, batch.payloads, [batch.events[i] for i in v.indices])
        return make_batch(
            batch.schema,
            [r.payload for r in v.records],
            self.accepts,
            ids=[r.id for r in v.records],
            timestamps=[r.timestamp for r in v.records],
        )
