"""The base classes a plugin derives from, and a filter's verdicts."""

from dataclasses import dataclass
from typing import Iterable, List

from .batch import Batch, NewRecord

__all__ = ["Plugin", "Sink", "Filter", "KEEP_ALL", "Keep", "Replace"]

ENCODINGS = ("json", "msgpack")


class Plugin:
    """What both kinds share. Set the class attributes; `describe` reads
    them before `init`, so they must not depend on configuration."""

    #: Short, stable name, e.g. `webhook`.
    name: str = ""
    #: The plugin's own version, semver.
    version: str = "0.1.0"
    #: The payload encoding to receive: `json` (decoded by the
    #: interpreter's C JSON parser, the faster choice in Python) or
    #: `msgpack` (the producer's bytes, decoded in pure Python).
    accepts: str = "json"

    def init(self, config: dict) -> None:
        """Configures the plugin with the pump's `config` table. Raise
        (`ConfigError` or anything else) to fail the pump's start with the
        message."""


class Sink(Plugin):
    """A sink delivers batches: override `write`."""

    def write(self, batch: Batch) -> None:
        """Delivers `batch`. Returning means every record was delivered;
        raise `Retry`, `Partial`, `InvalidBatch`, `TooLarge` or `Fatal`
        otherwise."""
        raise NotImplementedError(f"{type(self).__name__}.write")


class Filter(Plugin):
    """A filter decides which records go on: override `process`.

    `process` returns `None` or `KEEP_ALL` (keep every record), `Keep(...)`
    or any iterable of indices or `Record`s (keep those), or
    `Replace([...])` of `NewRecord`s (see `Record.replaced`). Raising
    `Retry` (or any error) makes the host retry the batch with backoff.
    """

    def process(self, batch: Batch):
        raise NotImplementedError(f"{type(self).__name__}.process")


class _KeepAll:
    def __repr__(self):
        return "KEEP_ALL"


#: Keep every record.
KEEP_ALL = _KeepAll()


@dataclass
class Keep:
    """Keep only these records, by index (any order; duplicates ignored).
    An empty list drops the whole batch."""

    indices: List[int]


@dataclass
class Replace:
    """Replace the batch with these records, in the plugin's `accepts`
    encoding."""

    records: List[NewRecord]


def keep_indices(result, n: int) -> List[int]:
    """The ascending, distinct indices of a `Keep` or an iterable of indices
    or records, each checked against the batch's `n` records."""
    items = result.indices if isinstance(result, Keep) else result
    out = set()
    for x in items:
        i = x if isinstance(x, int) and not isinstance(x, bool) else getattr(x, "index", None)
        if not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"kept {x!r}: not a record index of this batch of {n}")
        out.add(i)
    return sorted(out)


def check_class(cls):
    """Raises `TypeError` when `cls` is no usable plugin class."""
    if not (isinstance(cls, type) and issubclass(cls, (Sink, Filter))):
        raise TypeError(f"{cls!r} is not a subclass of pumphouse_sdk.Sink or pumphouse_sdk.Filter")
    if issubclass(cls, Sink) and issubclass(cls, Filter):
        raise TypeError(f"{cls.__name__} is both a Sink and a Filter; a plugin is one kind")
    if cls.accepts not in ENCODINGS:
        raise TypeError(f"{cls.__name__}.accepts = {cls.accepts!r}: use 'json' or 'msgpack'")
    if not cls.name:
        raise TypeError(f"{cls.__name__}.name is empty: give the plugin a short, stable name")
    return "sink" if issubclass(cls, Sink) else "filter"
