#!/usr/bin/env node
// node build.mjs APP.js [-o OUT.wasm] [--http]: a plugin file to a component.
//
// Imports APP.js to find the one exported Sink or Filter subclass, writes
// an entry module that exports it through the SDK's glue and wires the
// host imports, bundles both with rolldown (the `pumphouse:` imports stay
// imports), and runs ComponentizeJS against the WIT contract shipped with
// the SDK, so the bindings come from wit/pump.wit at every build. Without
// --http the component imports no wasi:http (fetch is then unavailable).
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));
const WIT = join(SDK, '..', '..', 'wit', 'pump.wit');

function fail(message) {
  console.error(`pumphouse js build: ${message}`);
  process.exit(1);
}

const args = process.argv.slice(2);
const app = args.find((a, i) => !a.startsWith('-') && args[i - 1] !== '-o');
if (!app) fail('usage: node build.mjs APP.js [-o OUT.wasm] [--http]');
const oi = args.indexOf('-o');
const out = resolve(oi >= 0 ? args[oi + 1] : app.replace(/\.m?js$/, '') + '.wasm');
const http = args.includes('--http');

const sdk = await import(pathToFileURL(join(SDK, 'src', 'index.js')));
let mod;
try {
  mod = await import(pathToFileURL(resolve(app)));
} catch (e) {
  fail(`${app}: importing it failed: ${e.message}`);
}
const found = Object.entries(mod).filter(([, v]) => typeof v === 'function' && (v.prototype instanceof sdk.Sink || v.prototype instanceof sdk.Filter));
if (found.length !== 1) fail(`${app}: export exactly one subclass of Sink or Filter (found: ${found.map(([n]) => n).join(', ') || 'none'})`);
const [exportName, cls] = found[0];
let kind;
try {
  kind = sdk.checkClass(cls);
} catch (e) {
  fail(`${app}: ${e.message}`);
}

const work = mkdtempSync(join(tmpdir(), 'pumphouse-js-'));
try {
  const entry = join(work, 'entry.js');
  writeFileSync(
    entry,
    `import * as host from 'pumphouse:plugin/host@0.1.0';
import * as kv from 'pumphouse:plugin/kv@0.1.0';
import { componentBackend, exportPlugin, setBackend } from ${JSON.stringify(join(SDK, 'src', 'index.js'))};
import { ${exportName} as PluginClass } from ${JSON.stringify(resolve(app))};
setBackend(componentBackend(host, kv));
const e = exportPlugin(PluginClass);
export const plugin = e.plugin;
export const ${kind} = e.${kind};
`,
  );
  const { rolldown } = await import('rolldown');
  const bundle = await rolldown({ input: entry, external: [/^pumphouse:/, /^wasi:/], logLevel: 'warn' });
  const bundled = join(work, 'bundle.js');
  await bundle.write({ file: bundled, format: 'esm' });
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: WIT,
    worldName: `pump-${kind}`,
    disableFeatures: http ? ['fetch-event'] : ['http', 'fetch-event'],
  });
  writeFileSync(out + '.tmp', component);
  const { renameSync } = await import('node:fs');
  renameSync(out + '.tmp', out);
  console.log(`built ${out} (${kind}, ${statSync(out).size} bytes)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
