import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecodeError, Ext, packValue, unpack } from '../src/msgpack.js';

test('values round-trip in their smallest forms', () => {
  const values = [null, true, false, 0, 127, 128, 65535, 65536, 2 ** 32, -1, -32, -33, -129, -32769, -(2 ** 31) - 1,
    1.5, '', 'a'.repeat(31), 'é'.repeat(40), 'x'.repeat(70000), new Uint8Array(300), [], [1, 'two', null], { k: { n: [1] } },
    new Ext(-1, new Uint8Array([0, 0, 0, 1])), new Ext(7, new Uint8Array(300)), 2n ** 63n, -(2n ** 63n)];
  for (const v of values) assert.deepEqual(unpack(packValue(v)), v);
  assert.deepEqual(packValue(200), new Uint8Array([0xcc, 0xc8]));
  assert.deepEqual(packValue([1, 2]), new Uint8Array([0x92, 1, 2]));
});

test('int64 the way iam writes TimeStamp', () => {
  const b = new Uint8Array([0xd3, 0, 0, 0, 0, 0x65, 0x5c, 0x5e, 0x40]);
  assert.equal(unpack(b), 0x655c5e40);
});

test('malformed input is a clear error', () => {
  for (const [raw, needle] of [
    [[], /truncated/], [[0xa5, 0x61], /truncated/], [[0xc1], /starts no value/], [[1, 2], /after the value/],
    [[0xdd, 0xff, 0xff, 0xff, 0xff], /array of 4294967295/], [[0xdf, 0xff, 0xff, 0xff, 0xff], /map of/],
    [[...Array(100).fill(0x91), 1], /nested deeper/],
  ]) {
    assert.throws(() => unpack(new Uint8Array(raw)), (e) => e instanceof DecodeError && needle.test(e.message));
  }
});
