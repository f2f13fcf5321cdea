"""Typed iam and Tyk records.

Field names are snake_case; each field's producer map key (`Username`,
`APIKey`, ...) is in `KEYS`. As in the Rust SDK, every field is optional
on the wire (missing and nil give the default), unknown keys are ignored,
and times become UTC `datetime`s from any form `times.parse` reads.
`to_value(encoding)` writes the map back in the producer's own forms
(`msgpack`) or as the host's JSON encoding writes it (`json`), for a
filter that replaces records.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional

from . import times

__all__ = ["RecordError", "IamRecord", "TykRecord", "Geo", "Country", "City", "Location", "Network", "Latency"]


class RecordError(ValueError):
    """A record's field has a value of the wrong type."""


def _str(v, key):
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    raise RecordError(f"{key}: expected a string, got {type(v).__name__}")


def _int(v, key):
    if v is None:
        return 0
    if isinstance(v, bool):
        raise RecordError(f"{key}: expected an integer, got a bool")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise RecordError(f"{key}: expected an integer, got {type(v).__name__}")


def _float(v, key):
    if v is None:
        return 0.0
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise RecordError(f"{key}: expected a number, got {type(v).__name__}")


def _bool(v, key):
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    raise RecordError(f"{key}: expected a bool, got {type(v).__name__}")


def _time(v, key):
    try:
        return times.parse(v)
    except times.TimeError as e:
        raise RecordError(f"{key}: {e}") from None


def _strs(v, key):
    if v is None:
        return []
    if not isinstance(v, list):
        raise RecordError(f"{key}: expected an array, got {type(v).__name__}")
    return [_str(x, key) for x in v]


def _any(v, key):
    return v


def _map(v, key):
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RecordError(f"{key}: expected a map, got {type(v).__name__}")
    return v


# Per field: (attribute, map key, reader).
class _Wire:
    KEYS: Dict[str, str] = {}
    _SPEC: tuple = ()

    @classmethod
    def from_value(cls, value):
        """The record in a decoded payload (a `dict`); raises `RecordError`."""
        if not isinstance(value, dict):
            raise RecordError(f"a {cls.__name__} is a map, got {type(value).__name__}")
        kw = {}
        get = value.get
        for attr, key, read in cls._SPEC:
            v = get(key)
            if isinstance(read, type) and issubclass(read, _Wire):
                kw[attr] = read.from_value(_map(v, key))
            else:
                kw[attr] = read(v, key)
        return cls(**kw)

    def to_value(self, encoding="json"):
        """The record as a producer map for `encoding` (`json` or `msgpack`)."""
        out = {}
        for attr, key, read in self._SPEC:
            v = getattr(self, attr)
            if isinstance(v, _Wire):
                v = v.to_value(encoding)
            elif isinstance(v, datetime):
                v = self._time_out(key, v, encoding)
            out[key] = v
        return out

    def _time_out(self, key, t, encoding):
        if encoding == "json":
            return times.rfc3339(t)
        return list(times.unix_seconds_nanos(t))


def _spec(cls, spec):
    cls._SPEC = tuple(spec)
    cls.KEYS = {attr: key for attr, key, _ in spec}
    return cls


@dataclass
class IamRecord(_Wire):
    """An iam-authz-server analytics record (schema `iam`)."""

    timestamp: datetime = times.EPOCH
    username: str = ""
    effect: str = ""
    conclusion: str = ""
    #: The authorization request, as JSON text.
    request: str = ""
    policies: str = ""
    deciders: str = ""
    expire_at: datetime = times.EPOCH

    def _time_out(self, key, t, encoding):
        if encoding == "json":
            return times.rfc3339(t)
        # iam writes TimeStamp as integer seconds, ExpireAt as a timestamp.
        if key == "TimeStamp":
            return times.unix_seconds_nanos(t)[0]
        return times.msgpack_timestamp(t)


_spec(
    IamRecord,
    [
        ("timestamp", "TimeStamp", _time),
        ("username", "Username", _str),
        ("effect", "Effect", _str),
        ("conclusion", "Conclusion", _str),
        ("request", "Request", _str),
        ("policies", "Policies", _str),
        ("deciders", "Deciders", _str),
        ("expire_at", "ExpireAt", _time),
    ],
)


@dataclass
class Country(_Wire):
    iso_code: str = ""


_spec(Country, [("iso_code", "ISOCode", _str)])


@dataclass
class City(_Wire):
    geo_name_id: int = 0
    names: Dict[str, str] = field(default_factory=dict)


_spec(City, [("geo_name_id", "GeoNameID", _int), ("names", "Names", _map)])


@dataclass
class Location(_Wire):
    latitude: float = 0.0
    longitude: float = 0.0
    time_zone: str = ""


_spec(
    Location,
    [("latitude", "Latitude", _float), ("longitude", "Longitude", _float), ("time_zone", "TimeZone", _str)],
)


@dataclass
class Geo(_Wire):
    country: Country = field(default_factory=Country)
    city: City = field(default_factory=City)
    location: Location = field(default_factory=Location)


_spec(Geo, [("country", "Country", Country), ("city", "City", City), ("location", "Location", Location)])


@dataclass
class Network(_Wire):
    open_connections: int = 0
    closed_connection: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


_spec(
    Network,
    [
        ("open_connections", "OpenConnections", _int),
        ("closed_connection", "ClosedConnection", _int),
        ("bytes_in", "BytesIn", _int),
        ("bytes_out", "BytesOut", _int),
    ],
)


@dataclass
class Latency(_Wire):
    total: int = 0
    upstream: int = 0
    gateway: int = 0


_spec(Latency, [("total", "Total", _int), ("upstream", "Upstream", _int), ("gateway", "Gateway", _int)])


@dataclass
class TykRecord(_Wire):
    """A Tyk Gateway analytics record (schema `tyk`)."""

    method: str = ""
    host: str = ""
    path: str = ""
    raw_path: str = ""
    content_length: int = 0
    user_agent: str = ""
    day: int = 0
    month: int = 0
    year: int = 0
    hour: int = 0
    response_code: int = 0
    api_key: str = ""
    timestamp: datetime = times.EPOCH
    api_version: str = ""
    api_name: str = ""
    api_id: str = ""
    org_id: str = ""
    oauth_id: str = ""
    #: Milliseconds.
    request_time: int = 0
    #: Base64 of the HTTP request as sent.
    raw_request: str = ""
    raw_response: str = ""
    ip_address: str = ""
    geo: Geo = field(default_factory=Geo)
    network: Network = field(default_factory=Network)
    latency: Latency = field(default_factory=Latency)
    tags: List[str] = field(default_factory=list)
    alias: str = ""
    track_path: bool = False
    expire_at: datetime = times.EPOCH
    api_schema: str = ""
    original_path: str = ""
    listen_path: str = ""
    #: Kept as the decoded value when present.
    graphql_stats: Optional[Any] = None
    mcp_stats: Optional[Any] = None

    def to_value(self, encoding="json"):
        out = super().to_value(encoding)
        # Absent stays absent, as the Rust SDK writes it.
        for key in ("GraphQLStats", "MCPStats"):
            if out[key] is None:
                del out[key]
        return out


_spec(
    TykRecord,
    [
        ("method", "Method", _str),
        ("host", "Host", _str),
        ("path", "Path", _str),
        ("raw_path", "RawPath", _str),
        ("content_length", "ContentLength", _int),
        ("user_agent", "UserAgent", _str),
        ("day", "Day", _int),
        ("month", "Month", _int),
        ("year", "Year", _int),
        ("hour", "Hour", _int),
        ("response_code", "ResponseCode", _int),
        ("api_key", "APIKey", _str),
        ("timestamp", "TimeStamp", _time),
        ("api_version", "APIVersion", _str),
        ("api_name", "APIName", _str),
        ("api_id", "APIID", _str),
        ("org_id", "OrgID", _str),
        ("oauth_id", "OauthID", _str),
        ("request_time", "RequestTime", _int),
        ("raw_request", "RawRequest", _str),
        ("raw_response", "RawResponse", _str),
        ("ip_address", "IPAddress", _str),
        ("geo", "Geo", Geo),
        ("network", "Network", Network),
        ("latency", "Latency", Latency),
        ("tags", "Tags", _strs),
        ("alias", "Alias", _str),
        ("track_path", "TrackPath", _bool),
        ("expire_at", "ExpireAt", _time),
        ("api_schema", "ApiSchema", _str),
        ("original_path", "OriginalPath", _str),
        ("listen_path", "ListenPath", _str),
        ("graphql_stats", "GraphQLStats", _any),
        ("mcp_stats", "MCPStats", _any),
    ],
)
