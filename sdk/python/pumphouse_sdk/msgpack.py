"""MessagePack decoding and encoding in pure Python.

Pure Python so that it is bundled into the component with the SDK (the
component's interpreter cannot load C extensions). It reads every form the
producers write and keeps what it does not interpret: extension values
(iam's `ExpireAt` timestamps among them) decode to `Ext` and encode back
unchanged, and strings that are not UTF-8 keep their bytes through
`surrogateescape`.
"""

import struct
from dataclasses import dataclass

__all__ = ["Ext", "DecodeError", "unpackb", "packb"]

# One limit on nesting, so a hostile payload cannot exhaust the stack.
MAX_DEPTH = 64


class DecodeError(ValueError):
    """The bytes are not one well-formed MessagePack value."""


@dataclass(frozen=True)
class Ext:
    """An extension value: its type code and raw data."""

    code: int
    data: bytes


_S8 = struct.Struct(">b").unpack_from
_S16 = struct.Struct(">h").unpack_from
_S32 = struct.Struct(">i").unpack_from
_S64 = struct.Struct(">q").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def take(self, n):
        p = self.pos
        if n > self.end - p:
            raise DecodeError(f"truncated: {n} bytes wanted at offset {p}, {self.end - p} left")
        self.pos = p + n
        return p

    def raw(self, n):
        p = self.take(n)
        return bytes(self.buf[p : p + n])

    def string(self, n):
        return self.raw(n).decode("utf-8", "surrogateescape")

    def value(self, depth):
        if depth > MAX_DEPTH:
            raise DecodeError(f"nested deeper than {MAX_DEPTH} levels")
        b = self.buf[self.take(1)]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self.string(b & 0x1F)
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, depth)
        buf = self.buf
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b == 0xCC:
            return buf[self.take(1)]
        if b == 0xCD:
            return _U16(buf, self.take(2))[0]
        if b == 0xCE:
            return _U32(buf, self.take(4))[0]
        if b == 0xCF:
            return _U64(buf, self.take(8))[0]
        if b == 0xD0:
            return _S8(buf, self.take(1))[0]
        if b == 0xD1:
            return _S16(buf, self.take(2))[0]
        if b == 0xD2:
            return _S32(buf, self.take(4))[0]
        if b == 0xD3:
            return _S64(buf, self.take(8))[0]
        if b == 0xCA:
            return _F32(buf, self.take(4))[0]
        if b == 0xCB:
            return _F64(buf, self.take(8))[0]
        if b == 0xD9:
            return self.string(buf[self.take(1)])
        if b == 0xDA:
            return self.string(_U16(buf, self.take(2))[0])
        if b == 0xDB:
            return self.string(_U32(buf, self.take(4))[0])
        if b == 0xC4:
            return self.raw(buf[self.take(1)])
        if b == 0xC5:
            return self.raw(_U16(buf, self.take(2))[0])
        if b == 0xC6:
            return self.raw(_U32(buf, self.take(4))[0])
        if b == 0xDC:
            return self.array(_U16(buf, self.take(2))[0], depth)
        if b == 0xDD:
            return self.array(_U32(buf, self.take(4))[0], depth)
        if b == 0xDE:
            return self.map(_U16(buf, self.take(2))[0], depth)
        if b == 0xDF:
            return self.map(_U32(buf, self.take(4))[0], depth)
        if 0xD4 <= b <= 0xD8:
            n = 1 << (b - 0xD4)
            code = _S8(buf, self.take(1))[0]
            return Ext(code, self.raw(n))
        if b == 0xC7:
            n = buf[self.take(1)]
        elif b == 0xC8:
            n = _U16(buf, self.take(2))[0]
        elif b == 0xC9:
            n = _U32(buf, self.take(4))[0]
        else:
            raise DecodeError(f"byte 0x{b:02x} at offset {self.pos - 1} starts no value")
        code = _S8(buf, self.take(1))[0]
        return Ext(code, self.raw(n))

    def array(self, n, depth):
        # Every element takes at least one byte: refuse counts the input
        # cannot hold before allocating for them.
        if n > self.end - self.pos:
            raise DecodeError(f"array of {n} elements in {self.end - self.pos} bytes")
        return [self.value(depth + 1) for _ in range(n)]

    def map(self, n, depth):
        if 2 * n > self.end - self.pos:
            raise DecodeError(f"map of {n} entries in {self.end - self.pos} bytes")
        out = {}
        for _ in range(n):
            k = self.value(depth + 1)
            if isinstance(k, (list, dict)):
                raise DecodeError("a map key is an array or a map")
            out[k] = self.value(depth + 1)
        return out


def unpackb(data):
    """Decodes one MessagePack value that fills all of `data` (bytes or a
    memoryview). Raises `DecodeError` on malformed or trailing bytes."""
    r = _Reader(data)
    v = r.value(0)
    if r.pos != r.end:
        raise DecodeError(f"{r.end - r.pos} bytes after the value")
    return v


def _pack(v, out, depth):
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        if 0 <= v <= 0x7F or -32 <= v < 0:
            out.append(v & 0xFF)
        elif 0 <= v <= 0xFF:
            out += b"\xcc" + struct.pack(">B", v)
        elif 0 <= v <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", v)
        elif 0 <= v <= 0xFFFFFFFF:
            out += b"\xce" + struct.pack(">I", v)
        elif 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            out += b"\xcf" + struct.pack(">Q", v)
        elif -0x80 <= v:
            out += b"\xd0" + struct.pack(">b", v)
        elif -0x8000 <= v:
            out += b"\xd1" + struct.pack(">h", v)
        elif -0x80000000 <= v:
            out += b"\xd2" + struct.pack(">i", v)
        elif -0x8000000000000000 <= v:
            out += b"\xd3" + struct.pack(">q", v)
        else:
            raise ValueError(f"integer {v} does not fit in 64 bits")
    elif isinstance(v, float):
        out += b"\xcb" + struct.pack(">d", v)
    elif isinstance(v, str):
        b = v.encode("utf-8", "surrogateescape")
        n = len(b)
        if n <= 31:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += b"\xd9" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xda" + struct.pack(">H", n)
        else:
            out += b"\xdb" + struct.pack(">I", n)
        out += b
    elif isinstance(v, (bytes, bytearray, memoryview)):
        n = len(v)
        if n <= 0xFF:
            out += b"\xc4" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xc5" + struct.pack(">H", n)
        else:
            out += b"\xc6" + struct.pack(">I", n)
        out += v
    elif isinstance(v, (list, tuple)):
        n = len(v)
        if n <= 15:
            out.append(0x90 | n)
        elif n <= 0xFFFF:
            out += b"\xdc" + struct.pack(">H", n)
        else:
            out += b"\xdd" + struct.pack(">I", n)
        for x in v:
            _pack(x, out, depth + 1)
    elif isinstance(v, dict):
        n = len(v)
        if n <= 15:
            out.append(0x80 | n)
        elif n <= 0xFFFF:
            out += b"\xde" + struct.pack(">H", n)
        else:
            out += b"\xdf" + struct.pack(">I", n)
        for k, x in v.items():
            _pack(k, out, depth + 1)
            _pack(x, out, depth + 1)
    elif isinstance(v, Ext):
        n = len(v.data)
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(n)
        if fixed is not None:
            out.append(fixed)
        elif n <= 0xFF:
            out += b"\xc7" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xc8" + struct.pack(">H", n)
        else:
            out += b"\xc9" + struct.pack(">I", n)
        out += struct.pack(">b", v.code) + v.data
    else:
        # datetime and the typed records have their own wire forms; see
        # `records`.
        to_wire = getattr(v, "to_msgpack_value", None)
        if to_wire is None:
            raise TypeError(f"cannot encode {type(v).__name__} as MessagePack")
        _pack(to_wire(), out, depth + 1)


def packb(value):
    """Encodes `value` (None, bool, int, float, str, bytes, list, tuple,
    dict, `Ext`) as MessagePack bytes, each in its smallest form."""
    out = bytearray()
    _pack(value, out, 0)
    return bytes(out)
