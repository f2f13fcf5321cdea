"""The plugin class seen through the WIT exports.

`exports(cls, wit)` builds the classes componentize-py instantiates for
the `plugin` and `sink` / `filter` interfaces. `wit` is a namespace of the
generated binding types (`_component.py`), or the look-alikes of the test
harness, so the same conversions run under pytest as in the component.
"""

import json

from .batch import Batch, BadRecord
from .errors import Fatal, InvalidBatch, Partial, Retry, TooLarge
from .plugin import KEEP_ALL, Replace, check_class, keep_indices


def _name(enum_value):
    return enum_value.name.lower()


def batch_from_wit(b) -> Batch:
    return Batch(_name(b.schema), _name(b.encoding), b.payloads, b.events)


def write_error(e, wit):
    """The WIT `write-error` of a write exception, or None for others."""
    if isinstance(e, BadRecord):
        return wit.WriteError_Partial([wit.FailedEvent(e.index, e.reason, False)])
    if isinstance(e, Partial):
        return wit.WriteError_Partial(
            [wit.FailedEvent(int(f.index), str(f.reason), bool(f.retryable)) for f in e.failures]
        )
    if isinstance(e, Retry):
        return wit.WriteError_Retry(str(e))
    if isinstance(e, InvalidBatch):
        return wit.WriteError_InvalidBatch(str(e))
    if isinstance(e, TooLarge):
        return wit.WriteError_TooLarge()
    if isinstance(e, Fatal):
        return wit.WriteError_Fatal(str(e))
    return None


def verdict(result, batch: Batch, encoding, wit):
    """The WIT `verdict` of what `Filter.process` returned."""
    if result is None or result is KEEP_ALL:
        return wit.Verdict_KeepAll()
    if isinstance(result, Replace):
        payloads = bytearray()
        events = []
        for r in result.records:
            events.append(wit.Event(int(r.id), int(r.timestamp), len(payloads), len(r.payload)))
            payloads += r.payload
        return wit.Verdict_Replace(wit.Batch(wit.Schema[batch.schema.upper()], encoding, bytes(payloads), events))
    return wit.Verdict_Keep(keep_indices(result, len(batch)))


def exports(cls, wit):
    """`(Plugin, Sink)` or `(Plugin, Filter)` export classes for `cls`."""
    kind = check_class(cls)
    encoding = wit.Encoding[cls.accepts.upper()]
    # One plugin object per component instance: the host instantiates a
    # component per pump instance and calls describe, init, then batches.
    state = {}

    def plugin():
        p = state.get("p")
        if p is None:
            p = state["p"] = cls()
        return p

    class Plugin:
        def describe(self):
            return wit.PluginInfo(cls.name, cls.version, encoding)

        def init(self, config):
            try:
                cfg = json.loads(config) if config else {}
                plugin().init(cfg)
            except Exception as e:
                raise wit.Err(f"{type(e).__name__}: {e}") from None

    class SinkExport:
        def write(self, batch):
            try:
                plugin().write(batch_from_wit(batch))
            except Exception as e:
                err = write_error(e, wit)
                if err is None:
                    raise
                raise wit.Err(err) from None

    class FilterExport:
        def process(self, batch):
            b = batch_from_wit(batch)
            try:
                return verdict(plugin().process(b), b, encoding, wit)
            except (Retry, BadRecord, ValueError) as e:
                raise wit.Err(f"{type(e).__name__}: {e}") from None

    return Plugin, (SinkExport if kind == "sink" else FilterExport)
