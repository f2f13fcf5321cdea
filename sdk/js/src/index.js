// @pumphouse/sdk: pumphouse sink and filter plugins in JavaScript. A plugin
// is one class extending Sink or Filter; build.mjs makes it a component
// with ComponentizeJS, testing.js runs it under `node --test`.
import { DecodeError, Ext, packValue, unpack } from './msgpack.js';
import { iamRecord, RecordError, tykRecord } from './records.js';
import { parseTime, rfc3339 } from './times.js';

export { DecodeError, Ext, packValue, unpack, iamRecord, tykRecord, RecordError, parseTime, rfc3339 };

// ---- write errors (one per WIT write-error case) ----
export class WriteError extends Error {}
/** Transient trouble: the host backs off and retries the batch. */
export class Retry extends WriteError {}
/** Only these records failed: `[{ index, reason, retryable }]`. */
export class Partial extends WriteError {
  constructor(failures) {
    super(`${failures.length} record(s) failed`);
    this.failures = failures.map((f) => ({ index: f.index, reason: String(f.reason), retryable: Boolean(f.retryable) }));
  }
}
/** Bad data somewhere in the batch: the host bisects it. */
export class InvalidBatch extends WriteError {}
/** The batch is too large: the host splits it. */
export class TooLarge extends WriteError {
  constructor(message = 'batch too large') {
    super(message);
  }
}
/** Misconfiguration: the host stops sending to the pump. */
export class Fatal extends WriteError {}
/** A bad `config`: fails the pump's start. */
export class ConfigError extends Error {}
/** A record that does not decode; unhandled in `write`, only it fails (dead-lettered). */
export class BadRecord extends Error {
  constructor(index, reason) {
    super(`record ${index}: ${reason}`);
    this.index = index;
    this.reason = reason;
  }
}
/** The state store is unreachable (a Retry). */
export class KvError extends Retry {}

// ---- host services ----
let backend = null;
/** @internal */
export function setBackend(b) {
  backend = b;
}
function host() {
  if (!backend) throw new Error('@pumphouse/sdk: no host here; run the plugin in pumphouse, or under the testing Harness');
  return backend;
}
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
const logAt = (level) => (message) => host().log(level, String(message));
export const log = Object.fromEntries(LEVELS.map((l) => [l, logAt(l)]));
const labels = (l) => Object.entries(l || {}).map(([key, value]) => ({ key, value: String(value) }));
/** Adds `value` to counter `name` (`pumphouse_plugin_<name>_total`). */
export function counterAdd(name, value = 1, lbls = {}) {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`counter ${name}: ${value} is not a non-negative integer`);
  host().counterAdd(name, value, labels(lbls));
}
export function gaugeSet(name, value, lbls = {}) {
  host().gaugeSet(name, Number(value), labels(lbls));
}
/** One value or a batch's values, in one host call. */
export function histogramObserve(name, values, lbls = {}) {
  const vs = typeof values === 'number' ? [values] : Array.from(values, Number);
  host().histogramObserve(name, vs, labels(lbls));
}
export const kv = {
  /** The value of `key` (Uint8Array) or undefined; throws KvError. */
  get: (key) => host().kvGet(key),
  /** Applies every write atomically; throws KvError. */
  commit: (writes) => host().kvCommit(writes),
  put: (key, value, ttlSeconds) => ({ key, value: value instanceof Uint8Array ? value : new TextEncoder().encode(String(value)), ttlSeconds }),
  delete: (key) => ({ key, value: undefined, ttlSeconds: undefined }),
};

// ---- batches ----
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8enc = new TextEncoder();

/** `value` (an object, or payload bytes kept as they are) as one payload in `encoding`. */
export function encodeValue(value, encoding) {
  if (value instanceof Uint8Array) return value;
  return encoding === 'json' ? utf8enc.encode(JSON.stringify(value)) : packValue(value);
}

export class Record {
  constructor(batch, index) {
    this.batch = batch;
    this.index = index;
    this.event = batch.events[index];
    this._value = undefined;
  }
  /** Stable across re-deliveries (BigInt). */
  get id() {
    return this.event.id;
  }
  get time() {
    return new Date(Number(this.event.timestamp));
  }
  get payload() {
    const e = this.event;
    return this.batch.payloads.subarray(e.offset, e.offset + e.len);
  }
  /** The decoded payload; throws BadRecord. */
  get value() {
    if (this._value === undefined) this._value = this.batch.decode(this.index);
    return this._value;
  }
  /** The typed record for iam and Tyk (the value for generic); throws BadRecord. */
  get record() {
    const read = { iam: iamRecord, tyk: tykRecord }[this.batch.schema];
    if (!read) return this.value;
    try {
      return read(this.value);
    } catch (e) {
      if (e instanceof RecordError) throw new BadRecord(this.index, e.message);
      throw e;
    }
  }
  /** A new record with this one's id and time and `value` as payload, for `replace`. */
  replaced(value) {
    return { payload: encodeValue(value, this.batch.encoding), id: this.event.id, timestamp: this.event.timestamp };
  }
}

export class Batch {
  constructor(schema, encoding, payloads, events) {
    this.schema = schema;
    this.encoding = encoding;
    this.payloads = payloads;
    this.events = events;
  }
  get length() {
    return this.events.length;
  }
  at(i) {
    if (i < 0) i += this.events.length;
    if (!(i >= 0 && i < this.events.length)) throw new RangeError(`record ${i} of a batch of ${this.events.length}`);
    return new Record(this, i);
  }
  *[Symbol.iterator]() {
    for (let i = 0; i < this.events.length; i++) yield new Record(this, i);
  }
  decode(i) {
    const e = this.events[i];
    if (e.offset + e.len > this.payloads.length) throw new BadRecord(i, `payload ${e.offset}+${e.len} is past the batch's ${this.payloads.length} bytes`);
    const bytes = this.payloads.subarray(e.offset, e.offset + e.len);
    try {
      return this.encoding === 'json' ? JSON.parse(utf8.decode(bytes)) : unpack(bytes);
    } catch (err) {
      throw new BadRecord(i, `not ${this.encoding}: ${err.message}`);
    }
  }
  /** Every decoded payload, in order. */
  *values() {
    for (let i = 0; i < this.events.length; i++) yield this.decode(i);
  }
}

// ---- plugins ----
export class Plugin {
  static pluginName = '';
  static version = '0.1.0';
  /** `json` (the engine's native parser: the faster choice) or `msgpack`. */
  static accepts = 'json';
  init(_config) {}
}
export class Sink extends Plugin {
  write(_batch) {
    throw new Error(`${this.constructor.name}.write is not implemented`);
  }
}
export class Filter extends Plugin {
  process(_batch) {
    throw new Error(`${this.constructor.name}.process is not implemented`);
  }
}
/** Keep every record. */
export const KEEP_ALL = Object.freeze({ keepAll: true });
/** Keep only these records (indices or Records, any order). */
export const keep = (items) => ({ keep: Array.from(items) });
/** Replace the batch with these records (see Record.replaced). */
export const replace = (records) => ({ replace: Array.from(records) });

/** Throws TypeError unless `cls` is a usable plugin class; returns its kind. */
export function checkClass(cls) {
  const isSink = cls && cls.prototype instanceof Sink;
  const isFilter = cls && cls.prototype instanceof Filter;
  if (!isSink && !isFilter) throw new TypeError(`${cls && cls.name} does not extend Sink or Filter`);
  if (!['json', 'msgpack'].includes(cls.accepts)) throw new TypeError(`${cls.name}.accepts = ${cls.accepts}: use 'json' or 'msgpack'`);
  if (!cls.pluginName) throw new TypeError(`${cls.name}.pluginName is empty: give the plugin a short, stable name`);
  return isSink ? 'sink' : 'filter';
}

/** What the component returns as a result's `err`. */
class ComponentError extends Error {
  constructor(payload) {
    super(typeof payload === 'string' ? payload : payload.tag);
    this.payload = payload;
  }
}

function writeError(e) {
  if (e instanceof BadRecord) return { tag: 'partial', val: [{ index: e.index, reason: e.reason, retryable: false }] };
  if (e instanceof Partial) return { tag: 'partial', val: e.failures };
  if (e instanceof Retry) return { tag: 'retry', val: e.message };
  if (e instanceof InvalidBatch) return { tag: 'invalid-batch', val: e.message };
  if (e instanceof TooLarge) return { tag: 'too-large' };
  if (e instanceof Fatal) return { tag: 'fatal', val: e.message };
  return null;
}

function verdict(result, batch, accepts) {
  if (result === undefined || result === null || result === KEEP_ALL) return { tag: 'keep-all' };
  if (result.replace) {
    const parts = result.replace;
    const total = parts.reduce((n, r) => n + r.payload.length, 0);
    const payloads = new Uint8Array(total);
    const events = [];
    let off = 0;
    for (const r of parts) {
      payloads.set(r.payload, off);
      events.push({ id: BigInt(r.id), timestamp: BigInt(r.timestamp), offset: off, len: r.payload.length });
      off += r.payload.length;
    }
    return { tag: 'replace', val: { schema: batch.schema, encoding: accepts, payloads, events } };
  }
  const items = result.keep ?? Array.from(result);
  const set = new Set();
  for (const x of items) {
    const i = typeof x === 'number' ? x : x && x.index;
    if (!Number.isInteger(i) || i < 0 || i >= batch.length) throw new RangeError(`kept ${x}: not a record index of this batch of ${batch.length}`);
    set.add(i);
  }
  return { tag: 'keep', val: Uint32Array.from([...set].sort((a, b) => a - b)) };
}

/** The WIT exports `{ plugin, sink }` or `{ plugin, filter }` of `cls`. */
export function exportPlugin(cls) {
  const kind = checkClass(cls);
  let instance = null;
  const get = () => (instance ??= new cls());
  const plugin = {
    describe: () => ({ name: cls.pluginName, version: cls.version, accepts: cls.accepts }),
    init(config) {
      try {
        get().init(config ? JSON.parse(config) : {});
      } catch (e) {
        throw new ComponentError(`${e.name}: ${e.message}`);
      }
    },
  };
  const toBatch = (b) => new Batch(b.schema, b.encoding, b.payloads, b.events);
  if (kind === 'sink') {
    return {
      plugin,
      sink: {
        write(b) {
          const fail = (e) => {
            const err = writeError(e);
            throw err ? new ComponentError(err) : e;
          };
          let r;
          try {
            r = get().write(toBatch(b));
          } catch (e) {
            fail(e);
          }
          // An async write (one that awaits fetch) returns a promise.
          if (r && typeof r.then === 'function') return r.then(() => undefined, fail);
        },
      },
    };
  }
  return {
    plugin,
    filter: {
      process(b) {
        const batch = toBatch(b);
        try {
          return verdict(get().process(batch), batch, cls.accepts);
        } catch (e) {
          if (e instanceof Retry || e instanceof BadRecord || e instanceof RangeError) throw new ComponentError(`${e.name}: ${e.message}`);
          throw e;
        }
      },
    },
  };
}

/** The host services through the component's WIT imports. */
export function componentBackend(hostImports, kvImports) {
  const payloadOf = (e) => (e && e.payload !== undefined ? e.payload : String(e));
  return {
    log: (level, message) => hostImports.log(level, message),
    counterAdd: (name, value, l) => hostImports.counterAdd(name, BigInt(value), l),
    gaugeSet: (name, value, l) => hostImports.gaugeSet(name, value, l),
    histogramObserve: (name, values, l) => hostImports.histogramObserve(name, Float64Array.from(values), l),
    kvGet(key) {
      try {
        return kvImports.get(key);
      } catch (e) {
        throw new KvError(`kv get ${key}: ${payloadOf(e)}`);
      }
    },
    kvCommit(writes) {
      try {
        kvImports.commit(writes);
      } catch (e) {
        throw new KvError(`kv commit: ${payloadOf(e)}`);
      }
    },
  };
}

export { ComponentError };
