//! The builder, its options and their defaults.

use std::time::Duration;

use crate::endpoint::{self, Endpoint, Tls, TlsSetup, Topology};
use crate::format::Format;
use crate::reporter::Reporter;
use crate::BuildError;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Default number of worker tasks (each with its own Redis connection).
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default bound on the records held at once: queued, batched or being sent.
pub const DEFAULT_BUFFER_SIZE: usize = 20_000;
/// Default records per pipeline.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Default quiet time after which a partial batch is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Default longest time a record waits in a partial batch.
pub const DEFAULT_MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default policy when the buffer is full.
pub const DEFAULT_WHEN_FULL: WhenFull = WhenFull::Drop;
/// Default target: a list holding the same bytes the producers write,
/// filled with one `RPUSH` per batch.
pub const DEFAULT_TARGET: Target = Target::ListBatched;
/// Default field holding the record bytes in a stream entry.
pub const DEFAULT_STREAM_FIELD: &str = "record";
/// Default time Redis may stay unreachable before failing batches are lost.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Default first delay between attempts at a failing batch.
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(50);
/// Default cap of the delay between attempts (jitter adds up to as much again).
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(2);
/// Default timeout of one connection attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default timeout of one pipeline's reply.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What happens to a record when the buffer already holds `buffer_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// `record()` and `record_wait()` return `Err(Full)` at once and count
    /// the record in `dropped_total{reason="full"}`. Requests never wait.
    Drop,
    /// `record_wait()` waits for room (it never waits on the network, only
    /// for the workers to free room); `record()` cannot wait, so it hands
    /// the record back in `Err(Full)` without counting it.
    Block,
}

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `RPUSH key record`, one command per record, a pipeline per batch:
    /// exactly the commands iam-authz-server and Tyk Gateway send; what
    /// pumphouse and iam-pump read.
    List,
    /// `RPUSH key record1 … recordN`, one command per batch (the
    /// default). The list ends up holding the same bytes, in the same
    /// order, as with [`Target::List`], so every reader of the list
    /// (pumphouse, iam-pump, tyk-pump) sees no difference; it costs Redis
    /// and the workers less CPU, and a batch is all-or-nothing: a
    /// connection cut mid-batch cannot leave part of it behind to be sent
    /// twice. A batch is one command: keep `batch_size` times the record
    /// size well under Redis's `client-query-buffer-limit` (1 GB).
    ListBatched,
    /// `XADD key MAXLEN ~ max_len * <field> record`, a pipeline per batch.
    Stream {
        /// Approximate length bound of the stream (`MAXLEN ~`).
        max_len: u64,
    },
}

/// Placeholder format of a builder whose [`format`](ReporterBuilder::format)
/// has not been chosen yet; such a builder cannot build.
#[derive(Debug, Clone, Copy)]
pub struct NoFormat;

/// Options of a [`Reporter`]; see [`Reporter::builder`]. Every option has a
/// default (the `DEFAULT_*` constants) except the format.
#[derive(Debug, Clone)]
pub struct ReporterBuilder<F> {
    format: F,
    opts: Options,
}

/// The resolved options the workers run with.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub redis_url: String,
    pub key: Option<String>,
    pub pool_size: usize,
    pub buffer_size: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_flush_interval: Duration,
    pub when_full: WhenFull,
    pub target: Target,
    pub stream_field: String,
    pub give_up_after: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub runtime: Option<tokio::runtime::Handle>,
    pub tls: Option<Tls>,
    pub sentinel_password: Option<String>,
}

impl ReporterBuilder<NoFormat> {
    pub(crate) fn new() -> Self {
        ReporterBuilder {
            format: NoFormat,
            opts: Options {
                redis_url: DEFAULT_REDIS_URL.to_string(),
                key: None,
                pool_size: DEFAULT_POOL_SIZE,
                buffer_size: DEFAULT_BUFFER_SIZE,
                batch_size: DEFAULT_BATCH_SIZE,
                flush_interval: DEFAULT_FLUSH_INTERVAL,
                max_flush_interval: DEFAULT_MAX_FLUSH_INTERVAL,
                when_full: DEFAULT_WHEN_FULL,
                target: DEFAULT_TARGET,
                stream_field: DEFAULT_STREAM_FIELD.to_string(),
                give_up_after: DEFAULT_GIVE_UP_AFTER,
                retry_min: DEFAULT_RETRY_MIN,
                retry_max: DEFAULT_RETRY_MAX,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                send_timeout: DEFAULT_SEND_TIMEOUT,
                runtime: None,
                tls: None,
                sentinel_password: None,
            },
        }
    }
}

impl<F> ReporterBuilder<F> {
    /// The record format: [`Iam`](crate::Iam), [`Tyk`](crate::Tyk),
    /// [`Msgpack::<T>::new()`](crate::Msgpack) or your own [`Format`].
    /// Required.
    pub fn format<G: Format>(self, format: G) -> ReporterBuilder<G> {
        ReporterBuilder {
            format,
            opts: self.opts,
        }
    }

    /// Redis URL. Default [`DEFAULT_REDIS_URL`]. One server:
    /// `redis://[user:password@]host:port/db`, `rediss://…` (TLS) or
    /// `redis+unix:///path?db=N`. Behind Sentinel:
    /// `redis[s]+sentinel://[user:password@]h1:p1,h2:p2/MASTER/db` (the
    /// credentials are the primary's). Redis Cluster:
    /// `redis[s]+cluster://[user:password@]h1:p1,h2:p2` (seed nodes).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.opts.redis_url = url.into();
        self
    }

    /// TLS settings for a `rediss…://` URL: CA, client certificate,
    /// server name, or no verification. Default: verification against
    /// the system's roots, no client certificate. Refused at `build()`
    /// with a plain `redis…://` URL.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.opts.tls = Some(tls);
        self
    }

    /// The sentinels' own password (`requirepass` in sentinel.conf) for a
    /// `redis+sentinel://` URL. Default: none.
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.opts.sentinel_password = Some(password.into());
        self
    }

    /// The list or stream key. Default: the format's producer key
    /// ([`IAM_KEY`](crate::IAM_KEY), [`TYK_KEY`](crate::TYK_KEY)); required
    /// for `Msgpack`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.opts.key = Some(key.into());
        self
    }

    /// Worker tasks, each batching, encoding and sending on its own
    /// connection. Default [`DEFAULT_POOL_SIZE`].
    pub fn pool_size(mut self, n: usize) -> Self {
        self.opts.pool_size = n;
        self
    }

    /// Most records held at once, counting those queued, batched and being
    /// sent or retried. Default [`DEFAULT_BUFFER_SIZE`].
    pub fn buffer_size(mut self, n: usize) -> Self {
        self.opts.buffer_size = n;
        self
    }

    /// Records per batch, sent as one pipeline. Default [`DEFAULT_BATCH_SIZE`].
    pub fn batch_size(mut self, n: usize) -> Self {
        self.opts.batch_size = n;
        self
    }

    /// A partial batch is sent once no record has joined it for this long
    /// (checked every `flush_interval`, so a lone record waits between one
    /// and two intervals). Default [`DEFAULT_FLUSH_INTERVAL`].
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.opts.flush_interval = d;
        self
    }

    /// A partial batch is sent at the latest this long after its first
    /// record joined it, however busy. At least `flush_interval`. Default
    /// [`DEFAULT_MAX_FLUSH_INTERVAL`].
    pub fn max_flush_interval(mut self, d: Duration) -> Self {
        self.opts.max_flush_interval = d;
        self
    }

    /// What a full buffer does to a new record. Default [`DEFAULT_WHEN_FULL`].
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.opts.when_full = policy;
        self
    }

    /// A list (`RPUSH` per record, or per batch) or a stream
    /// (`XADD … MAXLEN ~`). Default [`DEFAULT_TARGET`].
    pub fn target(mut self, target: Target) -> Self {
        self.opts.target = target;
        self
    }

    /// The stream entry field that holds the record. Default
    /// [`DEFAULT_STREAM_FIELD`].
    pub fn stream_field(mut self, field: impl Into<String>) -> Self {
        self.opts.stream_field = field.into();
        self
    }

    /// How long Redis may stay unreachable (every attempt failing) before
    /// batches that fail are counted lost instead of retried. Default
    /// [`DEFAULT_GIVE_UP_AFTER`].
    pub fn give_up_after(mut self, d: Duration) -> Self {
        self.opts.give_up_after = d;
        self
    }

    /// Delays between attempts: capped exponential backoff from `min` to
    /// `max`, with jitter. Defaults [`DEFAULT_RETRY_MIN`],
    /// [`DEFAULT_RETRY_MAX`].
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.opts.retry_min = min;
        self.opts.retry_max = max;
        self
    }

    /// Timeout of one connection attempt. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.opts.connect_timeout = d;
        self
    }

    /// Timeout of one pipeline's reply; an attempt that times out is
    /// retried on a new connection. Default [`DEFAULT_SEND_TIMEOUT`].
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.opts.send_timeout = d;
        self
    }

    /// The Tokio runtime the workers run on, e.g. a small one of their own
    /// so that encoding and sending never share a thread with requests.
    /// Default: the runtime `build` is called from.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.opts.runtime = Some(handle);
        self
    }
}

impl<F: Format> ReporterBuilder<F> {
    /// Checks the options and spawns the workers (on the
    /// [`runtime`](Self::runtime) option's runtime, else on the current
    /// one). Does not connect: the workers connect (and reconnect) on
    /// their own, so a reporter can start before Redis does.
    ///
    /// Install your `metrics` recorder before this call: the metric handles
    /// are taken here.
    pub fn build(self) -> Result<Reporter<F::Record>, BuildError> {
        let mut opts = self.opts;
        let key = opts
            .key
            .take()
            .or_else(|| self.format.default_key().map(str::to_string))
            .ok_or(BuildError::MissingKey)?;
        opts.key = Some(key);
        opts.validate()?;
        let endpoint = opts.endpoint()?;
        let runtime = match opts.runtime.take() {
            Some(handle) => handle,
            None => tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?,
        };
        Ok(Reporter::start(self.format, opts, endpoint, &runtime))
    }
}

impl Options {
    fn validate(&self) -> Result<(), BuildError> {
        let bad = |option, reason| Err(BuildError::InvalidOption { option, reason });
        if self.key.as_deref().is_none_or(str::is_empty) {
            return bad("key", "must not be empty");
        }
        if self.pool_size == 0 {
            return bad("pool_size", "must be at least 1");
        }
        if self.buffer_size == 0 {
            return bad("buffer_size", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval", "must be positive");
        }
        if self.max_flush_interval < self.flush_interval {
            return bad("max_flush_interval", "must be at least flush_interval");
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return bad("retry", "need 0 < min <= max");
        }
        if self.connect_timeout.is_zero() || self.send_timeout.is_zero() {
            return bad("timeouts", "must be positive");
        }
        if let Target::Stream { max_len: 0 } = self.target {
            return bad("target", "stream max_len must be at least 1");
        }
        if self.stream_field.is_empty() {
            return bad("stream_field", "must not be empty");
        }
        Ok(())
    }

    /// The URL parsed and the TLS files read; errors name the culprit.
    fn endpoint(&self) -> Result<Endpoint, BuildError> {
        let p = endpoint::parse(&self.redis_url).map_err(BuildError::InvalidUrl)?;
        let tls = match (&self.tls, p.tls) {
            (Some(_), false) => {
                return Err(BuildError::InvalidOption {
                    option: "tls",
                    reason: "set, but redis_url is not a rediss…:// URL",
                })
            }
            (tls, true) => {
                let tls = tls.clone().unwrap_or_default();
                let insecure = tls.insecure || p.insecure;
                if insecure {
                    tracing::warn!(
                        "analytics reporter: TLS certificate verification is off (insecure); \
                         anyone on the path to Redis can read and change the records"
                    );
                }
                Some(TlsSetup::new(&tls, insecure).map_err(BuildError::Tls)?)
            }
            (None, false) => None,
        };
        if self.sentinel_password.is_some() && !matches!(p.topology, Topology::Sentinel { .. }) {
            return Err(BuildError::InvalidOption {
                option: "sentinel_password",
                reason: "set, but redis_url is not a redis[s]+sentinel:// URL",
            });
        }
        Ok(Endpoint {
            topology: p.topology,
            tls,
            user: p.user,
            password: p.password,
            db: p.db,
            sentinel_password: self.sentinel_password.clone(),
        })
    }

    pub(crate) fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }
}
