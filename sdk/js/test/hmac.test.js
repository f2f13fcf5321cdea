import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { hmacSha256Hex, sha256 } from '../src/hmac.js';

test('sha256 and hmac match node:crypto', () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 1000]) {
    const data = new Uint8Array(n).map((_, i) => (i * 7) & 0xff);
    assert.equal(Buffer.from(sha256(data)).toString('hex'), createHash('sha256').update(data).digest('hex'));
    for (const key of ['k', 'x'.repeat(64), 'y'.repeat(100)]) {
      assert.equal(hmacSha256Hex(key, data), createHmac('sha256', key).update(data).digest('hex'));
    }
  }
});
