"""pumphouse_sdk: write pumphouse sink and filter plugins in Python.

A plugin is one class deriving from `Sink` or `Filter`; `python -m
pumphouse_sdk build` makes it a WebAssembly component, and
`pumphouse_sdk.testing` runs it under plain pytest. See README.md.
"""

from .batch import Batch, BadRecord, Event, NewRecord, Record
from .errors import ConfigError, Failure, Fatal, InvalidBatch, Partial, Retry, TooLarge, WriteError
from .host import KvError, KvWrite, counter_add, gauge_set, histogram_observe, kv, log
from .plugin import KEEP_ALL, Filter, Keep, Replace, Sink
from .records import City, Country, Geo, IamRecord, Latency, Location, Network, RecordError, TykRecord

__version__ = "0.1.0"

__all__ = [
    "Batch", "BadRecord", "Event", "NewRecord", "Record",
    "ConfigError", "Failure", "Fatal", "InvalidBatch", "Partial", "Retry", "TooLarge", "WriteError",
    "KvError", "KvWrite", "counter_add", "gauge_set", "histogram_observe", "kv", "log",
    "KEEP_ALL", "Filter", "Keep", "Replace", "Sink",
    "City", "Country", "Geo", "IamRecord", "Latency", "Location", "Network", "RecordError", "TykRecord",
]
