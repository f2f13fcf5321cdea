//! The Lua scripts behind leased claims. Each runs atomically in Redis and
//! touches only keys that share one hash tag, so they work on Redis Cluster.
//! Deadlines use Redis's own clock (`TIME`), so instances with skewed clocks
//! agree on when a lease expires.

use std::sync::LazyLock;

use redis::Script;

/// Moves up to ARGV[1] records from the head of the source list into a new
/// batch list and leases it for ARGV[2] ms.
/// KEYS: source list, lease set, batch list.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
local count = #items
if count == 0 then return items end
redis.call('LTRIM', KEYS[1], count, -1)
-- unpack in chunks: Lua's stack holds a few thousand values at most.
for i = 1, count, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(items, i, math.min(i + 999, count)))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[3])
return items
"#,
    )
});

/// Leases a batch list that a `SORT … STORE` in the same `MULTI` just
/// filled, for ARGV[1] ms; does nothing when the source was empty (then
/// `SORT` stored nothing). Only the deadline needs Lua (Redis's clock): the
/// records themselves never pass through the interpreter, which is what
/// makes this claim cheaper than [`CLAIM`] (see `ListSource::claim_into`).
/// KEYS: lease set, batch list.
pub const LEASE_IF_CLAIMED: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), KEYS[2])
return 1
"#;

/// Takes over up to ARGV[2] batches whose lease expired, extending each by
/// ARGV[1] ms, and returns their keys. Atomic, so two instances never take
/// over the same batch at once.
/// KEYS: lease set.
pub static TAKE_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, k in ipairs(expired) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), k)
end
return expired
"#,
    )
});

/// Extends the leases of the batches named in ARGV[2..] by ARGV[1] ms,
/// only where they are still leased (`XX`): an acked batch stays gone.
/// KEYS: lease set.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
return #ARGV - 1
"#,
    )
});

/// Acknowledges a batch: drops its list and its lease. O(1) for Redis's
/// event loop (`UNLINK` frees in the background) and idempotent, so a retry
/// after a lost reply is harmless.
/// KEYS: lease set, batch list.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('UNLINK', KEYS[2])
return redis.call('ZREM', KEYS[1], KEYS[2])
"#,
    )
});

/// Stores a dead-letter entry that was sent in parts into string KEYS[2]:
/// appends it to the dead-letter list KEYS[1] (or, when ARGV[2] names a
/// field, adds it to the dead-letter stream KEYS[1] under that field) and
/// drops the parts. Returns 0 and stores nothing unless the parts are all
/// there (ARGV[1] bytes), so a lost or repeated part is never stored.
/// KEYS: dead-letter key, parts key (same hash tag).
pub static STORE_PARTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[2])
if (not v) or string.len(v) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('RPUSH', KEYS[1], v)
else
  redis.call('XADD', KEYS[1], '*', ARGV[2], v)
end
redis.call('UNLINK', KEYS[2])
return 1
"#,
    )
});
