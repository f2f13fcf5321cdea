// Run a plugin under `node --test` without building a component: the same
// export glue the component uses, a fake host that records what the plugin
// did (logs, counters, gauges, histograms, kv).
import { Batch, ComponentError, encodeValue, exportPlugin, Fatal, InvalidBatch, KEEP_ALL, KvError, Partial, Retry, setBackend, TooLarge } from './index.js';

/** `values` (objects or payload bytes) as a batch the host would build for `encoding`. */
export function makeBatch(schema, values, encoding = 'json', { ids, timestamps } = {}) {
  const parts = values.map((v) => encodeValue(v, encoding));
  const payloads = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  const events = [];
  let off = 0;
  parts.forEach((p, i) => {
    payloads.set(p, off);
    events.push({ id: BigInt(ids ? ids[i] : i + 1), timestamp: BigInt(timestamps ? timestamps[i] : 0), offset: off, len: p.length });
    off += p.length;
  });
  return new Batch(schema, encoding, payloads, events);
}

export class PluginError extends Error {}

class FakeHost {
  constructor() {
    this.logs = [];
    this.counters = new Map();
    this.gauges = new Map();
    this.histograms = new Map();
    this.kv = new Map();
    /** Set to a message to make every kv call fail, as when Redis is down. */
    this.kvDown = null;
  }
  static key(name, labels) {
    return name + JSON.stringify(labels.map((l) => [l.key, l.value]).sort());
  }
  log(level, message) {
    this.logs.push([level, message]);
  }
  counterAdd(name, value, labels) {
    const k = FakeHost.key(name, labels);
    this.counters.set(k, (this.counters.get(k) ?? 0) + value);
  }
  gaugeSet(name, value, labels) {
    this.gauges.set(FakeHost.key(name, labels), value);
  }
  histogramObserve(name, values, labels) {
    const k = FakeHost.key(name, labels);
    this.histograms.set(k, [...(this.histograms.get(k) ?? []), ...values]);
  }
  kvGet(key) {
    if (this.kvDown) throw new KvError(`kv get ${key}: ${this.kvDown}`);
    return this.kv.get(key);
  }
  kvCommit(writes) {
    if (this.kvDown) throw new KvError(`kv commit: ${this.kvDown}`);
    for (const w of writes) {
      if (w.value === undefined) this.kv.delete(w.key);
      else this.kv.set(w.key, w.value);
    }
  }
}

function toException(err) {
  switch (err.tag) {
    case 'retry': return new Retry(err.val);
    case 'partial': return new Partial(err.val);
    case 'invalid-batch': return new InvalidBatch(err.val);
    case 'too-large': return new TooLarge();
    default: return new Fatal(err.val);
  }
}

/** One plugin instance as the host drives it: describe, then init with `config`. */
export class Harness {
  constructor(cls, config = {}) {
    this.host = new FakeHost();
    setBackend(this.host);
    this.exports = exportPlugin(cls);
    this.info = this.exports.plugin.describe();
    this.accepts = this.info.accepts;
    try {
      this.exports.plugin.init(JSON.stringify(config));
    } catch (e) {
      if (e instanceof ComponentError) throw new PluginError(e.payload);
      throw e;
    }
  }
  counter(name, labels = {}) {
    return this.host.counters.get(FakeHost.key(name, Object.entries(labels).map(([key, value]) => ({ key, value: String(value) })))) ?? 0;
  }
  batch(schema, values, opts) {
    return makeBatch(schema, values, this.accepts, opts);
  }
  /** Calls the sink's `write`; throws the write error it returned (a
   * promise of it for an async `write`). */
  write(batch) {
    setBackend(this.host);
    const map = (e) => {
      throw e instanceof ComponentError ? toException(e.payload) : e;
    };
    let r;
    try {
      r = this.exports.sink.write(batch);
    } catch (e) {
      map(e);
    }
    if (r && typeof r.then === 'function') return r.then(() => undefined, map);
  }
  /** Calls the filter's `process`: KEEP_ALL, `{ keep: [indices] }` or `{ replace: [records] }`. */
  process(batch) {
    setBackend(this.host);
    let v;
    try {
      v = this.exports.filter.process(batch);
    } catch (e) {
      if (e instanceof ComponentError) throw new PluginError(e.payload);
      throw e;
    }
    if (v.tag === 'keep-all') return KEEP_ALL;
    if (v.tag === 'keep') return { keep: Array.from(v.val) };
    const b = v.val;
    return { replace: b.events.map((e) => ({ payload: b.payloads.subarray(e.offset, e.offset + e.len), id: e.id, timestamp: e.timestamp })) };
  }
}
