"""Times in every form the producers and the host write, as `datetime`.

Read: integer or float unix seconds (iam's `TimeStamp`), a MessagePack
timestamp extension (iam's `ExpireAt`), a `[seconds, nanoseconds]` array
(Tyk's times), an RFC 3339 string (batches the host encodes as JSON), and
nil, null or "" (the unix epoch). Results are timezone-aware UTC
datetimes; `datetime` keeps microseconds, so nanoseconds are truncated.
"""

import re
import struct
from datetime import datetime, timedelta, timezone

from .msgpack import Ext

__all__ = ["EPOCH", "TimeError", "parse", "from_unix_millis", "rfc3339", "unix_seconds_nanos"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: The MessagePack extension type of timestamps.
TIMESTAMP_EXT = -1

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


class TimeError(ValueError):
    """A value is no time in any known form."""


def _from_parts(secs, nanos):
    try:
        return EPOCH + timedelta(seconds=secs, microseconds=nanos // 1000)
    except OverflowError:
        raise TimeError(f"time {secs}s is outside the years datetime can hold") from None


def from_unix_millis(ms):
    """A UTC datetime from unix milliseconds (the unit of event timestamps)."""
    return _from_parts(ms // 1000, (ms % 1000) * 1_000_000)


def parse(v):
    """The UTC datetime of `v` in any form the module doc lists."""
    if v is None or v == "":
        return EPOCH
    if isinstance(v, bool):
        raise TimeError(f"{v!r} is not a time")
    if isinstance(v, int):
        return _from_parts(v, 0)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise TimeError(f"{v!r} is not a time")
        secs = int(v // 1)
        return _from_parts(secs, int((v - secs) * 1e9))
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(type(x) is int for x in v):
        return _from_parts(v[0], v[1])
    if isinstance(v, Ext) and v.code == TIMESTAMP_EXT:
        d = v.data
        if len(d) == 4:
            return _from_parts(struct.unpack(">I", d)[0], 0)
        if len(d) == 8:
            n = struct.unpack(">Q", d)[0]
            return _from_parts(n & 0x3_FFFF_FFFF, n >> 34)
        if len(d) == 12:
            nanos, secs = struct.unpack(">Iq", d)
            return _from_parts(secs, nanos)
        raise TimeError(f"timestamp extension of {len(d)} bytes (4, 8 or 12 expected)")
    if isinstance(v, str):
        m = _RFC3339.match(v)
        if not m:
            raise TimeError(f"{v!r} is not an RFC 3339 time")
        y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
        micros = int((frac or "0").ljust(6, "0")[:6])
        tz = timezone.utc
        if not z:
            off = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(off if sign == "+" else -off)
        try:
            t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micros, tz)
        except ValueError as e:
            raise TimeError(f"{v!r}: {e}") from None
        return t.astimezone(timezone.utc)
    raise TimeError(f"{type(v).__name__} {v!r} is not a time")


def unix_seconds_nanos(t):
    """`(seconds, nanoseconds)` since the unix epoch of an aware datetime."""
    delta = t - EPOCH
    secs = delta.days * 86400 + delta.seconds
    return secs, delta.microseconds * 1000


def rfc3339(t):
    """RFC 3339 text in UTC with a `Z`, as the host writes JSON times."""
    t = t.astimezone(timezone.utc)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def msgpack_timestamp(t):
    """The MessagePack timestamp extension (12-byte form) of `t`."""
    secs, nanos = unix_seconds_nanos(t)
    return Ext(TIMESTAMP_EXT, struct.pack(">Iq", nanos, secs))
