#!/usr/bin/env node
// Generates TypeScript declarations of the WIT contract (wit/pump.wit)
// into types/: one `declare module 'pumphouse:plugin/...'` file per
// interface, for both worlds. Uses jco's type generator with the WIT text
// (jco 1.35's `jco types` CLI cannot read files under Node 20).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));
// jco's bindgen (the package does not export this path; it is jco's own
// dependency, pinned by package-lock.json).
const bindgen = join(SDK, 'node_modules', '@bytecodealliance', 'jco-transpile', 'vendor', 'js-component-bindgen-component.js');
const { $init, generateTypes } = await import(pathToFileURL(bindgen));
await $init;
const source = readFileSync(join(SDK, '..', '..', 'wit', 'pump.wit'), 'utf8');
for (const world of ['pump-sink', 'pump-filter']) {
  const files = generateTypes(world, {
    wit: { tag: 'source', val: source },
    world,
    guest: true,
    features: { tag: 'list', val: [] },
    tlaCompat: false,
  });
  for (const [name, data] of files) {
    const path = join(SDK, 'types', name);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, data);
  }
}
console.log(`types generated from wit/pump.wit into ${join(SDK, 'types')}`);
