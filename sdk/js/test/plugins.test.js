import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Filter, Sink, Retry, Partial, InvalidBatch, TooLarge, Fatal, ConfigError, KEEP_ALL, keep, replace, log, counterAdd, gaugeSet, histogramObserve, kv, tykRecord, iamRecord, unpack, Ext, parseTime, setBackend } from '../src/index.js';
import { Harness, makeBatch, PluginError } from '../src/testing.js';

class Collect extends Sink {
  static pluginName = 'collect';
  static version = '1.2.3';
  static accepts = 'msgpack';
  init(config) {
    this.fail = config.fail;
  }
  write(batch) {
    const errors = { retry: () => new Retry('server down'), partial: () => new Partial([{ index: 1, reason: 'rejected' }]),
      invalid: () => new InvalidBatch('bad somewhere'), large: () => new TooLarge(), fatal: () => new Fatal('wrong token'), bug: () => new TypeError('oops') };
    if (this.fail) throw errors[this.fail]();
    for (const rec of batch) rec.record;
    log.info(`wrote ${batch.length}`);
    counterAdd('written', batch.length, { sink: 'collect' });
    gaugeSet('last_batch', batch.length);
    histogramObserve('sizes', [...batch].map((r) => r.index));
  }
}

test('describe, init and the host services', () => {
  const h = new Harness(Collect);
  assert.deepEqual(h.info, { name: 'collect', version: '1.2.3', accepts: 'msgpack' });
  h.write(h.batch('tyk', [{ Path: '/a' }, { Path: '/b' }]));
  assert.deepEqual(h.host.logs, [['info', 'wrote 2']]);
  assert.equal(h.counter('written', { sink: 'collect' }), 2);
  assert.deepEqual([...h.host.histograms.values()], [[0, 1]]);
});

test('write errors cross as write-error variants', () => {
  for (const [fail, cls, msg] of [['retry', Retry, 'server down'], ['invalid', InvalidBatch, 'bad somewhere'], ['fatal', Fatal, 'wrong token'], ['large', TooLarge, 'batch too large']]) {
    const h = new Harness(Collect, { fail });
    assert.throws(() => h.write(h.batch('iam', [{}])), (e) => e instanceof cls && e.message === msg);
  }
  const h = new Harness(Collect, { fail: 'partial' });
  assert.throws(() => h.write(h.batch('iam', [{}, {}])), (e) => e instanceof Partial && e.failures[0].index === 1 && !e.failures[0].retryable);
  const bug = new Harness(Collect, { fail: 'bug' });
  assert.throws(() => bug.write(bug.batch('iam', [{}])), TypeError);
});

test('an undecodable record fails alone', () => {
  const h = new Harness(Collect);
  const batch = makeBatch('tyk', [{ Path: '/ok' }, new Uint8Array([0xc1]), { ResponseCode: 'x' }], 'msgpack');
  assert.throws(() => h.write(batch), (e) => e instanceof Partial && e.failures[0].index === 1 && /starts no value/.test(e.failures[0].reason));
});

test('init errors carry their message', () => {
  class Picky extends Sink {
    static pluginName = 'picky';
    init() {
      throw new ConfigError('url: missing');
    }
  }
  assert.throws(() => new Harness(Picky), (e) => e instanceof PluginError && /url: missing/.test(e.message));
});

class Keep500 extends Filter {
  static pluginName = 'keep-500';
  init(config) {
    this.mode = config.mode ?? 'indices';
  }
  process(batch) {
    if (this.mode === 'all') return KEEP_ALL;
    if (this.mode === 'bad') return [batch.length];
    if (this.mode === 'retry') throw new Retry('later');
    if (this.mode === 'records') return [...batch].filter((r) => r.value.ResponseCode >= 500);
    return keep([...batch.values()].flatMap((v, i) => (v.ResponseCode >= 500 ? [i] : [])).reverse());
  }
}
const CODES = [200, 500, 404, 503].map((c) => ({ ResponseCode: c }));

test('filter verdicts', () => {
  assert.deepEqual(new Harness(Keep500).process(makeBatch('tyk', CODES)), { keep: [1, 3] });
  assert.deepEqual(new Harness(Keep500, { mode: 'records' }).process(makeBatch('tyk', CODES)), { keep: [1, 3] });
  assert.equal(new Harness(Keep500, { mode: 'all' }).process(makeBatch('tyk', CODES)), KEEP_ALL);
  assert.throws(() => new Harness(Keep500, { mode: 'bad' }).process(makeBatch('tyk', CODES)), (e) => e instanceof PluginError && /not a record index/.test(e.message));
  assert.throws(() => new Harness(Keep500, { mode: 'retry' }).process(makeBatch('tyk', CODES)), (e) => e instanceof PluginError && /later/.test(e.message));
});

test('replace keeps ids and times, encoded in accepts', () => {
  class Upper extends Filter {
    static pluginName = 'upper';
    static accepts = 'msgpack';
    process(batch) {
      return replace([...batch].map((r) => r.replaced({ ...r.value, Path: r.value.Path.toUpperCase() })));
    }
  }
  const h = new Harness(Upper);
  const v = h.process(h.batch('tyk', [{ Path: '/a' }, { Path: '/b' }], { ids: [5, 6], timestamps: [1000, 2000] }));
  assert.deepEqual(v.replace.map((r) => [r.id, r.timestamp]), [[5n, 1000n], [6n, 2000n]]);
  assert.deepEqual(unpack(v.replace[1].payload), { Path: '/B' });
});

test('kv state and outage', () => {
  class Count extends Sink {
    static pluginName = 'count';
    write(batch) {
      const n = Number(new TextDecoder().decode(kv.get('n') ?? new Uint8Array())) + batch.length;
      kv.commit([kv.put('n', String(n)), kv.delete('old')]);
    }
  }
  const h = new Harness(Count);
  h.host.kv.set('old', new Uint8Array([1]));
  h.write(h.batch('iam', [{}, {}]));
  h.write(h.batch('iam', [{}]));
  assert.deepEqual([...h.host.kv.keys()], ['n']);
  assert.equal(new TextDecoder().decode(h.host.kv.get('n')), '3');
  h.host.kvDown = 'connection refused';
  assert.throws(() => h.write(h.batch('iam', [{}])), (e) => e instanceof Retry && /connection refused/.test(e.message));
});

test('typed records and times', () => {
  const r = tykRecord({ Path: '/x', ResponseCode: 503, TimeStamp: [1772600767, 123456789], Geo: { City: { GeoNameID: 7 } }, Tags: null, Extra: 1 });
  assert.equal(r.path, '/x');
  assert.equal(r.responseCode, 503);
  assert.equal(r.timestamp.toISOString(), '2026-03-04T05:06:07.123Z');
  assert.equal(r.geo.city.geoNameId, 7);
  assert.deepEqual(r.tags, []);
  assert.equal(tykRecord.KEYS.apiKey, 'APIKey');
  assert.throws(() => tykRecord({ ResponseCode: '500' }), /ResponseCode/);
  const ts = new Uint8Array(12);
  new DataView(ts.buffer).setBigInt64(4, 1772600767n);
  const i = iamRecord({ TimeStamp: 1772600767, Username: 'alice', ExpireAt: new Ext(-1, ts) });
  assert.equal(i.expireAt.getTime(), 1772600767000);
  assert.equal(parseTime('2026-03-04T07:06:07+02:00').toISOString(), '2026-03-04T05:06:07.000Z');
  assert.throws(() => parseTime('yesterday'));
});

test('bad classes and host calls outside a host', () => {
  class NoName extends Sink {}
  assert.throws(() => new Harness(NoName), /pluginName is empty/);
  setBackend(null);
  assert.throws(() => log.info('x'), /testing Harness/);
});
