import struct

import pytest

from pumphouse_sdk.msgpack import DecodeError, Ext, packb, unpackb


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
        -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
        1.5, -0.25, "", "a" * 31, "é" * 40, "x" * 70000, b"", b"\x00" * 300,
        [], list(range(20)), {}, {"k": {"nested": [1, "two", None]}}, {1: "int key"},
        Ext(-1, b"\x00\x00\x00\x01"), Ext(5, b"abc"), Ext(7, b"x" * 300),
    ],
)
def test_round_trip(value):
    assert unpackb(packb(value)) == value


def test_smallest_forms_as_go_writes_them():
    assert packb(5) == b"\x05"
    assert packb(-5) == b"\xfb"
    assert packb(200) == b"\xcc\xc8"
    assert packb(-200) == b"\xd1\xff\x38"
    assert packb("ab") == b"\xa2ab"
    assert packb([1, 2]) == b"\x92\x01\x02"


def test_reads_forms_it_does_not_write():
    # int64 0xd3 for a small number (iam's TimeStamp), float32, str8.
    assert unpackb(b"\xd3" + struct.pack(">q", 1700000000)) == 1700000000
    assert unpackb(b"\xca" + struct.pack(">f", 0.5)) == 0.5
    assert unpackb(b"\xd9\x03abc") == "abc"
    assert unpackb(b"\xd6\xff" + struct.pack(">I", 7)) == Ext(-1, struct.pack(">I", 7))


def test_invalid_utf8_strings_keep_their_bytes():
    raw = b"\xa2\xff\xfe"
    v = unpackb(raw)
    assert isinstance(v, str)
    assert packb(v) == raw


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b"", "truncated"),
        (b"\xa5ab", "truncated"),
        (b"\xc1", "starts no value"),
        (b"\x01\x02", "after the value"),
        (b"\xdd\xff\xff\xff\xff", "array of 4294967295"),
        (b"\xdf\xff\xff\xff\xff", "map of 4294967295"),
        (b"\x91" * 100 + b"\x01", "nested deeper"),
        (b"\x81\x90\x01", "map key"),
    ],
)
def test_malformed_input_is_a_clear_error(raw, needle):
    with pytest.raises(DecodeError, match=needle):
        unpackb(raw)


def test_unknown_types_do_not_encode():
    with pytest.raises(TypeError, match="set"):
        packb({1, 2})
