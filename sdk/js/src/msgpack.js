// MessagePack decoding and encoding in plain JavaScript, bundled into the
// component with the SDK. It keeps what it does not interpret: extension
// values decode to `Ext` and encode back unchanged; 64-bit integers beyond
// Number.MAX_SAFE_INTEGER decode to BigInt so no digit is lost.

/** Nesting deeper than this is refused, so hostile input cannot exhaust the stack. */
export const MAX_DEPTH = 64;

export class DecodeError extends Error {}

/** An extension value: its type code and raw data. */
export class Ext {
  constructor(code, data) {
    this.code = code;
    this.data = data;
  }
}

const utf8 = new TextDecoder('utf-8');
const utf8enc = new TextEncoder();

function int64(big) {
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.p = 0;
  }
  take(n) {
    const p = this.p;
    if (n > this.b.length - p) throw new DecodeError(`truncated: ${n} bytes wanted at offset ${p}, ${this.b.length - p} left`);
    this.p = p + n;
    return p;
  }
  raw(n) {
    const p = this.take(n);
    return this.b.subarray(p, p + n);
  }
  str(n) {
    return utf8.decode(this.raw(n));
  }
  array(n, d) {
    if (n > this.b.length - this.p) throw new DecodeError(`array of ${n} elements in ${this.b.length - this.p} bytes`);
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(d + 1);
    return out;
  }
  map(n, d) {
    if (2 * n > this.b.length - this.p) throw new DecodeError(`map of ${n} entries in ${this.b.length - this.p} bytes`);
    const out = {};
    for (let i = 0; i < n; i++) {
      const k = this.value(d + 1);
      if (typeof k === 'object' && k !== null) throw new DecodeError('a map key is an array or a map');
      out[String(k)] = this.value(d + 1);
    }
    return out;
  }
  ext(n) {
    const code = this.v.getInt8(this.take(1));
    return new Ext(code, this.raw(n).slice());
  }
  value(d) {
    if (d > MAX_DEPTH) throw new DecodeError(`nested deeper than ${MAX_DEPTH} levels`);
    const b = this.b[this.take(1)];
    const v = this.v;
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b <= 0xbf) return this.str(b & 0x1f);
    if (b >= 0x80 && b <= 0x8f) return this.map(b & 0x0f, d);
    if (b >= 0x90 && b <= 0x9f) return this.array(b & 0x0f, d);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xcc: return this.b[this.take(1)];
      case 0xcd: return v.getUint16(this.take(2));
      case 0xce: return v.getUint32(this.take(4));
      case 0xcf: return int64(v.getBigUint64(this.take(8)));
      case 0xd0: return v.getInt8(this.take(1));
      case 0xd1: return v.getInt16(this.take(2));
      case 0xd2: return v.getInt32(this.take(4));
      case 0xd3: return int64(v.getBigInt64(this.take(8)));
      case 0xca: return v.getFloat32(this.take(4));
      case 0xcb: return v.getFloat64(this.take(8));
      case 0xd9: return this.str(this.b[this.take(1)]);
      case 0xda: return this.str(v.getUint16(this.take(2)));
      case 0xdb: return this.str(v.getUint32(this.take(4)));
      case 0xc4: return this.raw(this.b[this.take(1)]).slice();
      case 0xc5: return this.raw(v.getUint16(this.take(2))).slice();
      case 0xc6: return this.raw(v.getUint32(this.take(4))).slice();
      case 0xdc: return this.array(v.getUint16(this.take(2)), d);
      case 0xdd: return this.array(v.getUint32(this.take(4)), d);
      case 0xde: return this.map(v.getUint16(this.take(2)), d);
      case 0xdf: return this.map(v.getUint32(this.take(4)), d);
      case 0xd4: return this.ext(1);
      case 0xd5: return this.ext(2);
      case 0xd6: return this.ext(4);
      case 0xd7: return this.ext(8);
      case 0xd8: return this.ext(16);
      case 0xc7: return this.ext(this.b[this.take(1)]);
      case 0xc8: return this.ext(v.getUint16(this.take(2)));
      case 0xc9: return this.ext(v.getUint32(this.take(4)));
      default:
        throw new DecodeError(`byte 0x${b.toString(16).padStart(2, '0')} at offset ${this.p - 1} starts no value`);
    }
  }
}

/** Decodes one value that fills all of `bytes` (a Uint8Array). */
export function unpack(bytes) {
  const r = new Reader(bytes);
  const v = r.value(0);
  if (r.p !== bytes.length) throw new DecodeError(`${bytes.length - r.p} bytes after the value`);
  return v;
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.v = new DataView(this.buf.buffer);
    this.n = 0;
  }
  room(k) {
    if (this.n + k <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.n + k) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
    this.v = new DataView(next.buffer);
  }
  u8(x) { this.room(1); this.buf[this.n++] = x; }
  head(x, k, put) { this.room(1 + k); this.buf[this.n++] = x; put(this.v, this.n); this.n += k; }
  bytes(b) { this.room(b.length); this.buf.set(b, this.n); this.n += b.length; }
}

function packInt(w, x) {
  if (x >= 0 && x <= 0x7f) return w.u8(x);
  if (x < 0 && x >= -32) return w.u8(x & 0xff);
  if (x >= 0) {
    if (x <= 0xff) return w.head(0xcc, 1, (v, p) => v.setUint8(p, x));
    if (x <= 0xffff) return w.head(0xcd, 2, (v, p) => v.setUint16(p, x));
    if (x <= 0xffffffff) return w.head(0xce, 4, (v, p) => v.setUint32(p, x));
    return w.head(0xcf, 8, (v, p) => v.setBigUint64(p, BigInt(x)));
  }
  if (x >= -0x80) return w.head(0xd0, 1, (v, p) => v.setInt8(p, x));
  if (x >= -0x8000) return w.head(0xd1, 2, (v, p) => v.setInt16(p, x));
  if (x >= -0x80000000) return w.head(0xd2, 4, (v, p) => v.setInt32(p, x));
  return w.head(0xd3, 8, (v, p) => v.setBigInt64(p, BigInt(x)));
}

function sized(w, n, fix, fixMax, c8, c16, c32) {
  if (fix !== null && n <= fixMax) return w.u8(fix | n);
  if (c8 !== null && n <= 0xff) return w.head(c8, 1, (v, p) => v.setUint8(p, n));
  if (n <= 0xffff) return w.head(c16, 2, (v, p) => v.setUint16(p, n));
  return w.head(c32, 4, (v, p) => v.setUint32(p, n));
}

function pack(w, x, d) {
  if (d > MAX_DEPTH) throw new Error(`nested deeper than ${MAX_DEPTH} levels`);
  if (x === null || x === undefined) return w.u8(0xc0);
  if (x === true) return w.u8(0xc3);
  if (x === false) return w.u8(0xc2);
  if (typeof x === 'number') {
    if (Number.isInteger(x)) return packInt(w, x);
    return w.head(0xcb, 8, (v, p) => v.setFloat64(p, x));
  }
  if (typeof x === 'bigint') {
    if (x >= 0n) return w.head(0xcf, 8, (v, p) => v.setBigUint64(p, x));
    return w.head(0xd3, 8, (v, p) => v.setBigInt64(p, x));
  }
  if (typeof x === 'string') {
    const b = utf8enc.encode(x);
    sized(w, b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    return w.bytes(b);
  }
  if (x instanceof Uint8Array) {
    sized(w, x.length, null, 0, 0xc4, 0xc5, 0xc6);
    return w.bytes(x);
  }
  if (x instanceof Ext) {
    const n = x.data.length;
    const fixed = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
    if (fixed !== undefined) w.u8(fixed);
    else sized(w, n, null, 0, 0xc7, 0xc8, 0xc9);
    w.u8(x.code & 0xff);
    return w.bytes(x.data);
  }
  if (Array.isArray(x)) {
    sized(w, x.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const e of x) pack(w, e, d + 1);
    return;
  }
  if (typeof x.toMsgpackValue === 'function') return pack(w, x.toMsgpackValue(), d + 1);
  if (typeof x === 'object') {
    const keys = Object.keys(x);
    sized(w, keys.length, 0x80, 15, null, 0xde, 0xdf);
    for (const k of keys) {
      pack(w, k, d + 1);
      pack(w, x[k], d + 1);
    }
    return;
  }
  throw new TypeError(`cannot encode ${typeof x} as MessagePack`);
}

/** Encodes `value` as MessagePack, each number in its smallest form. */
export function packValue(value) {
  const w = new Writer();
  pack(w, value, 0);
  return w.buf.slice(0, w.n);
}
