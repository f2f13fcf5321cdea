// Typed iam and Tyk records: camelCase fields, times as Date. As in the
// Rust SDK, missing and nil fields take defaults and unknown keys are
// ignored. `KEYS` maps each field to its producer key.
import { parseTime, TimeError } from './times.js';

export class RecordError extends Error {}

const str = (v, k) => {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  throw new RecordError(`${k}: expected a string, got ${typeof v}`);
};
const int = (v, k) => {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint') return v;
  throw new RecordError(`${k}: expected an integer, got ${typeof v}`);
};
const num = (v, k) => {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  throw new RecordError(`${k}: expected a number, got ${typeof v}`);
};
const bool = (v, k) => {
  if (v === null || v === undefined) return false;
  if (typeof v === 'boolean') return v;
  throw new RecordError(`${k}: expected a bool, got ${typeof v}`);
};
const time = (v, k) => {
  try {
    return parseTime(v);
  } catch (e) {
    if (e instanceof TimeError) throw new RecordError(`${k}: ${e.message}`);
    throw e;
  }
};
const strs = (v, k) => {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new RecordError(`${k}: expected an array, got ${typeof v}`);
  return v.map((x) => str(x, k));
};
const map = (v, k) => {
  if (v === null || v === undefined) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new RecordError(`${k}: expected a map`);
  return v;
};
const any = (v) => (v === undefined ? null : v);

function reader(spec) {
  const read = (value, where = 'record') => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RecordError(`a ${where} is a map`);
    const out = {};
    for (const [field, key, conv] of spec) {
      const v = value[key];
      out[field] = conv.isReader ? conv(map(v, key), key) : conv(v, key);
    }
    return out;
  };
  read.isReader = true;
  read.KEYS = Object.fromEntries(spec.map(([f, k]) => [f, k]));
  return read;
}

const country = reader([['isoCode', 'ISOCode', str]]);
const city = reader([['geoNameId', 'GeoNameID', int], ['names', 'Names', map]]);
const location = reader([['latitude', 'Latitude', num], ['longitude', 'Longitude', num], ['timeZone', 'TimeZone', str]]);
const geo = reader([['country', 'Country', country], ['city', 'City', city], ['location', 'Location', location]]);
const network = reader([
  ['openConnections', 'OpenConnections', int], ['closedConnection', 'ClosedConnection', int],
  ['bytesIn', 'BytesIn', int], ['bytesOut', 'BytesOut', int],
]);
const latency = reader([['total', 'Total', int], ['upstream', 'Upstream', int], ['gateway', 'Gateway', int]]);

/** An iam-authz-server analytics record from its decoded map. Throws RecordError. */
export const iamRecord = reader([
  ['timestamp', 'TimeStamp', time], ['username', 'Username', str], ['effect', 'Effect', str],
  ['conclusion', 'Conclusion', str], ['request', 'Request', str], ['policies', 'Policies', str],
  ['deciders', 'Deciders', str], ['expireAt', 'ExpireAt', time],
]);

/** A Tyk Gateway analytics record from its decoded map. Throws RecordError. */
export const tykRecord = reader([
  ['method', 'Method', str], ['host', 'Host', str], ['path', 'Path', str], ['rawPath', 'RawPath', str],
  ['contentLength', 'ContentLength', int], ['userAgent', 'UserAgent', str], ['day', 'Day', int],
  ['month', 'Month', int], ['year', 'Year', int], ['hour', 'Hour', int], ['responseCode', 'ResponseCode', int],
  ['apiKey', 'APIKey', str], ['timestamp', 'TimeStamp', time], ['apiVersion', 'APIVersion', str],
  ['apiName', 'APIName', str], ['apiId', 'APIID', str], ['orgId', 'OrgID', str], ['oauthId', 'OauthID', str],
  ['requestTime', 'RequestTime', int], ['rawRequest', 'RawRequest', str], ['rawResponse', 'RawResponse', str],
  ['ipAddress', 'IPAddress', str], ['geo', 'Geo', geo], ['network', 'Network', network], ['latency', 'Latency', latency],
  ['tags', 'Tags', strs], ['alias', 'Alias', str], ['trackPath', 'TrackPath', bool], ['expireAt', 'ExpireAt', time],
  ['apiSchema', 'ApiSchema', str], ['originalPath', 'OriginalPath', str], ['listenPath', 'ListenPath', str],
  ['graphqlStats', 'GraphQLStats', any], ['mcpStats', 'MCPStats', any],
]);
