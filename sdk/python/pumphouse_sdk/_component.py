"""The glue inside a component: the generated bindings as `_glue`'s `wit`
namespace, and the host services through the WIT imports. Imported only
by the entry module `build` generates, where componentize-py has put the
bindings (`wit_world`) on the path."""

from types import SimpleNamespace

from componentize_py_types import Err
from wit_world.imports import host as _h
from wit_world.imports import kv as _kv
from wit_world.imports import types as _t

from . import _glue, host
from ._component_names import TYPES
from .host import KvError

WIT = SimpleNamespace(Err=Err, **{n: getattr(_t, n) for n in TYPES})

_LEVELS = {
    "trace": _h.Level.TRACE,
    "debug": _h.Level.DEBUG,
    "info": _h.Level.INFO,
    "warn": _h.Level.WARN,
    "error": _h.Level.ERROR,
}


def _labels(pairs):
    return [_h.Label(k, v) for k, v in pairs]


class _Host:
    def log(self, level, message):
        _h.log(_LEVELS[level], message)

    def counter_add(self, name, value, labels):
        _h.counter_add(name, value, _labels(labels))

    def gauge_set(self, name, value, labels):
        _h.gauge_set(name, value, _labels(labels))

    def histogram_observe(self, name, values, labels):
        _h.histogram_observe(name, values, _labels(labels))

    def kv_get(self, key):
        try:
            return _kv.get(key)
        except Err as e:
            raise KvError(f"kv get {key!r}: {e.value}") from None

    def kv_commit(self, writes):
        try:
            _kv.commit([_kv.Write(w.key, w.value, w.ttl_seconds) for w in writes])
        except Err as e:
            raise KvError(f"kv commit: {e.value}") from None


host._set_backend(_Host())


def exports(cls):
    return _glue.exports(cls, WIT)
