"""The services the host offers a plugin: logs, metrics and `kv` state.

Inside a component these call the WIT imports; under the test harness
(`pumphouse_sdk.testing`) they record what the plugin did. Labels are
keyword arguments: `counter_add("dropped", 3, reason="health")`.
"""

from dataclasses import dataclass
from typing import Iterable, List, Optional, Union

from .errors import Retry

__all__ = ["log", "counter_add", "gauge_set", "histogram_observe", "kv", "KvError", "KvWrite"]

# What the calls go to: set by the component glue or the test harness.
_backend = None


def _set_backend(b):
    global _backend
    _backend = b


def _host():
    if _backend is None:
        raise RuntimeError(
            "pumphouse_sdk: no host here; run the plugin in pumphouse, or under "
            "pumphouse_sdk.testing.Harness in tests"
        )
    return _backend


class _Log:
    """`log.info("...")` and friends: structured log lines attributed to the
    pump. The host bounds their size and rate."""

    LEVELS = ("trace", "debug", "info", "warn", "error")

    def __call__(self, level: str, message: str) -> None:
        if level not in self.LEVELS:
            raise ValueError(f"log level {level!r}: use one of {', '.join(self.LEVELS)}")
        _host().log(level, str(message))

    def trace(self, message):
        self("trace", message)

    def debug(self, message):
        self("debug", message)

    def info(self, message):
        self("info", message)

    def warn(self, message):
        self("warn", message)

    def error(self, message):
        self("error", message)


log = _Log()


def _labels(labels):
    return [(str(k), str(v)) for k, v in labels.items()]


def counter_add(name: str, value: int = 1, **labels) -> None:
    """Adds `value` to counter `name` (`pumphouse_plugin_<name>_total`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"counter {name}: {value!r} is not a non-negative integer")
    _host().counter_add(name, value, _labels(labels))


def gauge_set(name: str, value: float, **labels) -> None:
    """Sets gauge `name` (`pumphouse_plugin_<name>`)."""
    _host().gauge_set(name, float(value), _labels(labels))


def histogram_observe(name: str, values: Union[float, Iterable[float]], **labels) -> None:
    """Records one value or a batch's values (one host call) in histogram
    `name`; the buckets suit milliseconds."""
    if isinstance(values, (int, float)):
        values = [values]
    _host().histogram_observe(name, [float(v) for v in values], _labels(labels))


class KvError(Retry):
    """The state store is unreachable. A `Retry`, so leaving it unhandled in
    `write` makes the host redeliver the batch."""


@dataclass
class KvWrite:
    """One change of a `kv.commit`: `value=None` deletes the key."""

    key: str
    value: Optional[bytes]
    ttl_seconds: Optional[int] = None


class _Kv:
    """Durable state in the source's Redis, in a namespace of the pump's own.
    Values are bytes of at most 16 MiB."""

    Write = KvWrite

    def get(self, key: str) -> Optional[bytes]:
        """The value of `key`, or None; raises `KvError`."""
        return _host().kv_get(key)

    def commit(self, writes: List[KvWrite]) -> None:
        """Applies every write atomically, all or none; raises `KvError`."""
        _host().kv_commit(list(writes))

    def put(self, key: str, value: bytes, ttl_seconds: Optional[int] = None) -> KvWrite:
        """A write setting `key`, for `commit`."""
        return KvWrite(key, bytes(value), ttl_seconds)

    def delete(self, key: str) -> KvWrite:
        """A write deleting `key`, for `commit`."""
        return KvWrite(key, None, None)


kv = _Kv()
