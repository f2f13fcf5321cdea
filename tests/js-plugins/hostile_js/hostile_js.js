// Test fixture: a JavaScript sink that misbehaves in the way its config's
// `mode` names, to show that the sandbox holds a JavaScript component
// exactly as it holds the Rust `hostile` fixture.
//
//   spin       `write` loops forever; only the pump's `timeout` (epoch
//              interruption) ends the call
//   hog        `write` allocates without bound, touching every page; only
//              `sandbox.max_memory` ends it
//   log-flood  logs `lines` lines (default 1000) of `size` bytes (default
//              100 000) through the host's `log`, and as many to stderr
//              with console.error, then delivers
//   throw      throws a plain Error (no write error): an uncaught exception
//   bad-record throws BadRecord for the batch's first record: that record
//              fails alone, the others are delivered
import { BadRecord, Sink, log } from '../../../sdk/js/src/index.js';

const MODES = ['spin', 'hog', 'log-flood', 'throw', 'bad-record'];

export class HostileSink extends Sink {
  static pluginName = 'hostile-js';
  static accepts = 'json';

  init(config) {
    if (!MODES.includes(config.mode)) throw new Error(`unknown mode ${JSON.stringify(config.mode)}`);
    this.config = config;
    this.hoard = [];
  }

  write(batch) {
    const c = this.config;
    switch (c.mode) {
      case 'spin': {
        let n = batch.length;
        for (;;) n = (n * 31 + 7) | 0;
      }
      case 'hog':
        for (;;) this.hoard.push(new Uint8Array(1 << 20).fill(0xa5));
      case 'log-flood': {
        const line = 'x'.repeat(c.size ?? 100000);
        const lines = c.lines ?? 1000;
        for (let i = 0; i < lines; i++) {
          log.info(`flood ${i} ${line}`);
          console.error(`stderr flood ${i} ${line}`);
        }
        return;
      }
      case 'throw':
        throw new Error('hostile-js: throwing on purpose');
      case 'bad-record':
        if (batch.length > 0) throw new BadRecord(0, 'hostile-js: rejecting the first record');
        return;
    }
  }
}
