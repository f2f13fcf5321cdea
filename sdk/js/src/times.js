// Times in every form the producers and the host write, as Date (UTC;
// Date holds milliseconds, so finer digits are truncated).
import { Ext } from './msgpack.js';

export const EPOCH = new Date(0);
export class TimeError extends Error {}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

function fromParts(secs, nanos) {
  const d = new Date(secs * 1000 + Math.floor(nanos / 1e6));
  if (Number.isNaN(d.getTime())) throw new TimeError(`time ${secs}s is outside the range Date can hold`);
  return d;
}

/** The Date of integer/float unix seconds, `[seconds, nanoseconds]`, a MessagePack timestamp, an RFC 3339 string, or nil/"" (the epoch). */
export function parseTime(v) {
  if (v === null || v === undefined || v === '') return EPOCH;
  if (typeof v === 'number' && Number.isFinite(v)) return fromParts(Math.floor(v), Math.round((v % 1) * 1e9));
  if (typeof v === 'bigint') return fromParts(Number(v), 0);
  if (Array.isArray(v) && v.length === 2 && v.every((x) => Number.isInteger(x))) return fromParts(v[0], v[1]);
  if (v instanceof Ext && v.code === -1) {
    const dv = new DataView(v.data.buffer, v.data.byteOffset, v.data.byteLength);
    if (v.data.length === 4) return fromParts(dv.getUint32(0), 0);
    if (v.data.length === 8) {
      const n = dv.getBigUint64(0);
      return fromParts(Number(n & 0x3ffffffffn), Number(n >> 34n));
    }
    if (v.data.length === 12) return fromParts(Number(dv.getBigInt64(4)), dv.getUint32(0));
    throw new TimeError(`timestamp extension of ${v.data.length} bytes (4, 8 or 12 expected)`);
  }
  if (typeof v === 'string') {
    const m = RFC3339.exec(v);
    if (!m) throw new TimeError(`${JSON.stringify(v)} is not an RFC 3339 time`);
    const [, y, mo, d, h, mi, s, frac, z, sign, oh, om] = m;
    const ms = Number((frac || '0').padEnd(3, '0').slice(0, 3));
    let t = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s, ms);
    if (+mo < 1 || +mo > 12 || +d < 1 || +d > 31 || +h > 23 || +mi > 59 || +s > 60) throw new TimeError(`${v}: out of range`);
    if (!z) t -= (sign === '+' ? 1 : -1) * (+oh * 60 + +om) * 60000;
    return new Date(t);
  }
  throw new TimeError(`${typeof v} ${String(v)} is not a time`);
}

/** RFC 3339 text in UTC, as the host writes JSON times. */
export function rfc3339(d) {
  return d.toISOString().replace('.000Z', 'Z');
}
