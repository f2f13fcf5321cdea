// Benchmark fixture: keeps records whose `ResponseCode` is at least 500
// (`scripts/bench langs`; the Rust and Python filters do the same).
import { Filter } from '../../../sdk/js/src/index.js';

export class Keep5xx extends Filter {
  static pluginName = 'keep-5xx-js';
  static accepts = 'json';

  process(batch) {
    const kept = [];
    let i = 0;
    for (const v of batch.values()) {
      if ((v.ResponseCode ?? 0) >= 500) kept.push(i);
      i++;
    }
    return kept;
  }
}
