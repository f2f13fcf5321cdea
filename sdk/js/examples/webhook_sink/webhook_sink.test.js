import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { envelope, outcome, WebhookSink } from './webhook_sink.js';
import { Fatal, InvalidBatch, Retry, TooLarge } from '../../src/index.js';
import { Harness, makeBatch, PluginError } from '../../src/testing.js';

test('the envelope is the records as a JSON array, signed', () => {
  const batch = makeBatch('tyk', [{ Path: '/a' }, { Path: '/b' }]);
  const { body, signature } = envelope(batch, 's3cret');
  assert.deepEqual(JSON.parse(body), [{ Path: '/a' }, { Path: '/b' }]);
  assert.equal(signature, 'sha256=' + createHmac('sha256', 's3cret').update(body).digest('hex'));
});

test('statuses map to write errors', () => {
  assert.equal(outcome(204), null);
  assert.ok(outcome(413) instanceof TooLarge);
  assert.ok(outcome(400) instanceof InvalidBatch);
  assert.ok(outcome(401) instanceof Fatal);
  assert.ok(outcome(503) instanceof Retry);
});

test('bad config is refused', () => {
  assert.throws(() => new Harness(WebhookSink, { url: 'ftp://x', secret: 'k' }), (e) => e instanceof PluginError && /url/.test(e.message));
  assert.throws(() => new Harness(WebhookSink, { url: 'http://x' }), /secret/);
  assert.throws(() => new Harness(WebhookSink, { url: 'http://x', secret: 'k', colour: 1 }), /colour/);
});

test('posts to a real receiver, which verifies the signature', async () => {
  const got = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const ok = req.headers['x-signature-256'] === 'sha256=' + createHmac('sha256', 'k').update(body).digest('hex');
      got.push(JSON.parse(body));
      res.statusCode = ok ? (got.length === 1 ? 204 : 503) : 401;
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}/hook`;
  try {
    const h = new Harness(WebhookSink, { url, secret: 'k' });
    await h.write(h.batch('iam', [{ Username: 'alice' }]));
    assert.equal(h.counter('webhook_records'), 1);
    await assert.rejects(h.write(h.batch('iam', [{ Username: 'bob' }])), Retry);
    assert.deepEqual(got, [[{ Username: 'alice' }], [{ Username: 'bob' }]]);
  } finally {
    server.close();
  }
});
