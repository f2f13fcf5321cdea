import json
import struct
from datetime import datetime, timezone

import pytest

from pumphouse_sdk import IamRecord, RecordError, TykRecord
from pumphouse_sdk import times
from pumphouse_sdk.msgpack import Ext, packb, unpackb

T = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)


def test_times_in_every_producer_form():
    secs, nanos = 1772600767, 123456789
    assert times.parse(secs) == T.replace(microsecond=0)
    assert times.parse([secs, nanos]) == T
    assert times.parse(Ext(-1, struct.pack(">Iq", nanos, secs))) == T
    assert times.parse(Ext(-1, struct.pack(">Q", (nanos << 34) | secs))) == T
    assert times.parse(Ext(-1, struct.pack(">I", secs))) == T.replace(microsecond=0)
    assert times.parse("2026-03-04T05:06:07.123456789Z") == T
    assert times.parse("2026-03-04T07:06:07.123456+02:00") == T
    assert times.parse(None) == times.EPOCH
    assert times.parse("") == times.EPOCH
    assert times.from_unix_millis(1772600767123) == T.replace(microsecond=123000)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", [1, 2, 3], True, Ext(-1, b"12345"), Ext(3, b"1234")])
def test_bad_times_are_errors(bad):
    with pytest.raises(times.TimeError):
        times.parse(bad)


def test_rfc3339_round_trip():
    assert times.rfc3339(T) == "2026-03-04T05:06:07.123456Z"
    assert times.parse(times.rfc3339(T)) == T
    assert times.rfc3339(times.EPOCH) == "1970-01-01T00:00:00Z"


def tyk_map():
    return {
        "Method": "GET", "Host": "api.example.com", "Path": "/v1/users", "RawPath": "/v1/users",
        "ContentLength": 12, "UserAgent": "curl/8", "Day": 4, "Month": 3, "Year": 2026, "Hour": 5,
        "ResponseCode": 503, "APIKey": "key-abcdef1234", "TimeStamp": [1772600767, 123456789],
        "APIVersion": "v1", "APIName": "users", "APIID": "api-1", "OrgID": "org-1", "OauthID": "",
        "RequestTime": 42, "RawRequest": "R0VUIC8=", "RawResponse": "", "IPAddress": "10.0.0.1",
        "Geo": {"Country": {"ISOCode": "DE"}, "City": {"GeoNameID": 2950159, "Names": {"en": "Berlin"}},
                "Location": {"Latitude": 52.5, "Longitude": 13.4, "TimeZone": "Europe/Berlin"}},
        "Network": {"OpenConnections": 1, "ClosedConnection": 2, "BytesIn": 300, "BytesOut": 4000},
        "Latency": {"Total": 40, "Upstream": 35, "Gateway": 5},
        "Tags": ["a", "b"], "Alias": "alias", "TrackPath": True, "ExpireAt": [1772687167, 0],
        "ApiSchema": "", "OriginalPath": "/users", "ListenPath": "/v1/", "Unknown": {"ignored": 1},
    }


def test_tyk_record_fields():
    r = TykRecord.from_value(tyk_map())
    assert r.method == "GET" and r.path == "/v1/users" and r.response_code == 503
    assert r.api_key == "key-abcdef1234"
    assert r.timestamp == T
    assert r.expire_at == datetime(2026, 3, 5, 5, 6, 7, tzinfo=timezone.utc)
    assert r.geo.country.iso_code == "DE"
    assert r.geo.city.geo_name_id == 2950159 and r.geo.city.names == {"en": "Berlin"}
    assert r.geo.location.time_zone == "Europe/Berlin"
    assert r.network.bytes_out == 4000 and r.latency.upstream == 35
    assert r.tags == ["a", "b"] and r.track_path is True
    assert r.listen_path == "/v1/" and r.graphql_stats is None


def test_missing_and_nil_fields_default():
    r = TykRecord.from_value({"Path": "/x", "Tags": None, "Geo": None, "ResponseCode": None})
    assert r.path == "/x" and r.tags == [] and r.response_code == 0
    assert r.geo.country.iso_code == "" and r.timestamp == times.EPOCH


def test_wrong_types_name_the_field():
    with pytest.raises(RecordError, match="ResponseCode"):
        TykRecord.from_value({"ResponseCode": "500"})
    with pytest.raises(RecordError, match="Geo"):
        TykRecord.from_value({"Geo": [1]})
    with pytest.raises(RecordError, match="is a map"):
        TykRecord.from_value([1, 2])


def test_tyk_to_value_in_both_encodings():
    r = TykRecord.from_value(tyk_map())
    mp = r.to_value("msgpack")
    assert mp["TimeStamp"] == [1772600767, 123456000]
    assert "GraphQLStats" not in mp
    assert TykRecord.from_value(unpackb(packb(mp))) == r
    js = r.to_value("json")
    assert js["TimeStamp"] == "2026-03-04T05:06:07.123456Z"
    assert TykRecord.from_value(json.loads(json.dumps(js))) == r


def test_iam_record_producer_forms():
    secs = 1772600767
    wire = {
        "TimeStamp": secs, "Username": "alice", "Effect": "allow", "Conclusion": "ok",
        "Request": "{}", "Policies": "[]", "Deciders": "[]",
        "ExpireAt": Ext(-1, struct.pack(">Iq", 0, secs + 60)),
    }
    r = IamRecord.from_value(unpackb(packb(wire)))
    assert r.username == "alice" and r.effect == "allow"
    assert r.timestamp == T.replace(microsecond=0)
    assert (r.expire_at - r.timestamp).total_seconds() == 60
    back = r.to_value("msgpack")
    assert back["TimeStamp"] == secs
    assert back["ExpireAt"] == wire["ExpireAt"]
    assert IamRecord.KEYS["username"] == "Username"
