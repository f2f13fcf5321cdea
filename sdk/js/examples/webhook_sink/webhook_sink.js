// webhook: POSTs each batch as a JSON array to `url`, signed with
// HMAC-SHA256 of the body under `secret` in the `X-Signature-256` header
// (`sha256=<hex>`, as GitHub-style webhook receivers verify it).
//
// Config: url (required), secret (required; use ${ENV} in the pump config),
// header (default "X-Signature-256"). Needs the pump's
// sandbox.allowed_outbound_hosts to name the destination.
import { ConfigError, counterAdd, Fatal, InvalidBatch, Retry, Sink, TooLarge } from '../../src/index.js';
import { hmacSha256Hex } from '../../src/hmac.js';

const utf8 = new TextDecoder();

/** The body and its signature header value for `batch`. */
export function envelope(batch, secret) {
  const parts = [];
  for (const rec of batch) parts.push(utf8.decode(rec.payload));
  const body = `[${parts.join(',')}]`;
  return { body, signature: `sha256=${hmacSha256Hex(secret, body)}` };
}

/** What an HTTP status means for the batch: null when delivered. */
export function outcome(status) {
  if (status >= 200 && status < 300) return null;
  if (status === 413) return new TooLarge();
  if (status === 400 || status === 422) return new InvalidBatch(`the receiver rejected the batch (${status})`);
  if (status === 401 || status === 403 || status === 404) return new Fatal(`the receiver answered ${status}: check url and secret`);
  return new Retry(`the receiver answered ${status}`);
}

export class WebhookSink extends Sink {
  static pluginName = 'webhook';
  static version = '0.1.0';
  static accepts = 'json';

  init(config) {
    const unknown = Object.keys(config).filter((k) => !['url', 'secret', 'header'].includes(k));
    if (unknown.length) throw new ConfigError(`unknown config keys: ${unknown.join(', ')}`);
    if (typeof config.url !== 'string' || !/^https?:\/\//.test(config.url)) throw new ConfigError('url: expected an http:// or https:// URL');
    if (typeof config.secret !== 'string' || config.secret === '') throw new ConfigError('secret: expected a non-empty string');
    this.url = config.url;
    this.secret = config.secret;
    this.header = config.header ?? 'X-Signature-256';
  }

  async write(batch) {
    if (batch.length === 0) return;
    const { body, signature } = envelope(batch, this.secret);
    let resp;
    try {
      resp = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [this.header]: signature },
        body,
      });
    } catch (e) {
      throw new Retry(`POST ${this.url}: ${e.message}`);
    }
    const err = outcome(resp.status);
    if (err) throw err;
    counterAdd('webhook_records', batch.length);
  }
}
