import json

import pytest

import pumphouse_sdk as ph
from pumphouse_sdk import KEEP_ALL, Failure, Filter, Keep, Replace, Sink, TykRecord
from pumphouse_sdk.msgpack import unpackb
from pumphouse_sdk.testing import Harness, PluginError, make_batch


class Collect(Sink):
    name = "collect"
    version = "1.2.3"
    accepts = "msgpack"

    def init(self, config):
        self.fail = config.get("fail")

    def write(self, batch):
        if self.fail == "retry":
            raise ph.Retry("server down")
        if self.fail == "partial":
            raise ph.Partial([Failure(1, "rejected", retryable=False)])
        if self.fail == "invalid":
            raise ph.InvalidBatch("bad somewhere")
        if self.fail == "large":
            raise ph.TooLarge()
        if self.fail == "fatal":
            raise ph.Fatal("wrong token")
        if self.fail == "bug":
            raise KeyError("oops")
        ph.log.info(f"wrote {len(batch)}")
        ph.counter_add("written", len(batch), sink="collect")
        ph.gauge_set("last_batch", len(batch))
        ph.histogram_observe("sizes", [rec.index for rec in batch])


def test_describe_and_init():
    h = Harness(Collect)
    assert (h.info.name, h.info.version, h.accepts) == ("collect", "1.2.3", "msgpack")


def test_sink_sees_typed_records_and_reports_to_the_host():
    h = Harness(Collect)
    batch = h.batch("tyk", [{"Path": "/a", "ResponseCode": 200}, {"Path": "/b", "TimeStamp": [1, 0]}], ids=[7, 8])
    h.write(batch)
    assert h.logs == [("info", "wrote 2")]
    assert h.counter("written", sink="collect") == 2
    assert h.gauges[("last_batch", ())] == 2.0
    assert h.histograms[("sizes", ())] == [0.0, 1.0]


def test_records_decode_from_msgpack_batches():
    got = []

    class Grab(Sink):
        name = "grab"
        accepts = "msgpack"

        def write(self, batch):
            got.extend((r.id, r.record) for r in batch)

    h = Harness(Grab)
    h.write(h.batch("tyk", [{"Path": "/a", "ResponseCode": 503}], ids=[99]))
    assert got[0][0] == 99
    assert isinstance(got[0][1], TykRecord)
    assert got[0][1].response_code == 503


@pytest.mark.parametrize(
    "fail, exc, check",
    [
        ("retry", ph.Retry, lambda e: str(e) == "server down"),
        ("partial", ph.Partial, lambda e: e.failures == [Failure(1, "rejected", False)]),
        ("invalid", ph.InvalidBatch, lambda e: str(e) == "bad somewhere"),
        ("large", ph.TooLarge, lambda e: True),
        ("fatal", ph.Fatal, lambda e: str(e) == "wrong token"),
    ],
)
def test_write_errors_cross_as_write_error_variants(fail, exc, check):
    h = Harness(Collect, {"fail": fail})
    with pytest.raises(exc) as info:
        h.write(h.batch("iam", [{}, {}]))
    assert check(info.value)


def test_other_exceptions_propagate_as_a_trap_would():
    h = Harness(Collect, {"fail": "bug"})
    with pytest.raises(KeyError):
        h.write(h.batch("iam", [{}]))


def test_an_undecodable_record_is_reported_alone():
    class Strict(Sink):
        name = "strict"
        accepts = "json"

        def write(self, batch):
            for rec in batch:
                rec.record

    h = Harness(Strict)
    batch = make_batch("tyk", [{"Path": "/ok"}, b"{not json", {"ResponseCode": "x"}], "json")
    with pytest.raises(ph.Partial) as info:
        h.write(batch)
    assert info.value.failures[0].index == 1 and not info.value.failures[0].retryable
    assert "not json" in info.value.failures[0].reason


def test_init_errors_fail_the_start_with_their_message():
    class Picky(Sink):
        name = "picky"

        def init(self, config):
            raise ph.ConfigError("url: missing")

    with pytest.raises(ph.ConfigError, match="url: missing"):
        Harness(Picky)


class Keep500(Filter):
    name = "keep-500"

    def init(self, config):
        self.mode = config.get("mode", "indices")

    def process(self, batch):
        if self.mode == "all":
            return None
        if self.mode == "records":
            return (r for r in batch if r.value.get("ResponseCode", 0) >= 500)
        if self.mode == "bad-index":
            return [len(batch)]
        if self.mode == "retry":
            raise ph.Retry("later")
        return Keep([i for i, v in enumerate(batch.values()) if v.get("ResponseCode", 0) >= 500][::-1])


CODES = [{"ResponseCode": c} for c in (200, 500, 404, 503)]


def test_filter_keep_is_ascending_indices():
    h = Harness(Keep500)
    assert h.process(h.batch("tyk", CODES)) == Keep([1, 3])
    h = Harness(Keep500, {"mode": "records"})
    assert h.process(h.batch("tyk", CODES)) == Keep([1, 3])
    h = Harness(Keep500, {"mode": "all"})
    assert h.process(h.batch("tyk", CODES)) is KEEP_ALL


def test_filter_errors():
    h = Harness(Keep500, {"mode": "bad-index"})
    with pytest.raises(PluginError, match="not a record index"):
        h.process(h.batch("tyk", CODES))
    h = Harness(Keep500, {"mode": "retry"})
    with pytest.raises(PluginError, match="later"):
        h.process(h.batch("tyk", CODES))


def test_replace_keeps_ids_and_times_and_encodes_in_accepts():
    class Rewrite(Filter):
        name = "rewrite"
        accepts = "msgpack"

        def process(self, batch):
            out = []
            for rec in batch:
                r = rec.record
                r.path = r.path.upper()
                out.append(rec.replaced(r))
            return Replace(out)

    h = Harness(Rewrite)
    batch = h.batch("tyk", [{"Path": "/a"}, {"Path": "/b"}], ids=[5, 6], timestamps=[1000, 2000])
    after = h.kept(batch)
    assert [e.id for e in after.events] == [5, 6]
    assert [e.timestamp for e in after.events] == [1000, 2000]
    assert [r.record.path for r in after] == ["/A", "/B"]
    # Replaced payloads are producer maps in the filter's encoding.
    wire = unpackb(after[0].payload)
    assert wire["Path"] == "/A" and wire["TimeStamp"] == [0, 0]


def test_kv_state_and_outage():
    class Count(Sink):
        name = "count"

        def write(self, batch):
            n = int(ph.kv.get("n") or b"0") + len(batch)
            ph.kv.commit([ph.kv.put("n", str(n).encode(), ttl_seconds=60), ph.kv.delete("old")])

    h = Harness(Count)
    h.kv["old"] = b"x"
    h.write(h.batch("iam", [{}, {}]))
    h.write(h.batch("iam", [{}]))
    assert h.kv == {"n": b"3"}
    h.host.kv_down = "connection refused"
    with pytest.raises(ph.Retry, match="connection refused"):
        h.write(h.batch("iam", [{}]))


def test_bad_plugin_classes_are_refused():
    class NoName(Sink):
        pass

    class BadEnc(Sink):
        name = "x"
        accepts = "xml"

    with pytest.raises(TypeError, match="name is empty"):
        Harness(NoName)
    with pytest.raises(TypeError, match="accepts"):
        Harness(BadEnc)


def test_host_calls_outside_a_host_say_how_to_fix_it():
    from pumphouse_sdk import host

    host._set_backend(None)
    with pytest.raises(RuntimeError, match="testing.Harness"):
        ph.log.info("x")
    with pytest.raises(ValueError, match="log level"):
        ph.log("loud", "x")


def test_batch_access():
    b = make_batch("generic", [{"a": 1}, {"b": 2}], "json")
    assert len(b) == 2 and b[-1].value == {"b": 2} and b[0].record == {"a": 1}
    assert json.loads(b[1].payload) == {"b": 2}
    with pytest.raises(IndexError):
        b[2]
    assert len(make_batch("tyk", [])) == 0
