//! The one place a `redis_url` becomes a client or a connection: the
//! source, plugin kv state, `dlq`, `produce`, the demo and `check` all
//! connect through here, so connection settings (and later TLS, Sentinel
//! and Cluster) live in one seam.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::Value;

/// Opening or connecting to a Redis failed. URLs are redacted.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("invalid redis_url {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot connect to redis at {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
}

impl ConnError {
    /// The (redacted) URL and the Redis error, for callers with their own
    /// error type.
    pub fn into_parts(self) -> (String, redis::RedisError) {
        match self {
            ConnError::Url { url, source } | ConnError::Connect { url, source } => (url, source),
        }
    }
}

/// A parsed `redis_url`; nothing is connected until asked.
#[derive(Clone)]
pub struct Endpoint {
    client: redis::Client,
    /// For logs and errors.
    redacted: String,
}

impl Endpoint {
    /// Parses `url`.
    pub fn open(url: &str) -> Result<Endpoint, ConnError> {
        let redacted = redacted(url);
        let client = redis::Client::open(url).map_err(|source| ConnError::Url {
            url: redacted.clone(),
            source,
        })?;
        Ok(Endpoint { client, redacted })
    }

    /// The URL with any password masked.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    fn connect_err(&self, source: redis::RedisError) -> ConnError {
        ConnError::Connect {
            url: self.redacted.clone(),
            source,
        }
    }

    /// A self-healing connection for long-lived users; one attempt.
    pub async fn manager(&self) -> Result<ConnectionManager, ConnError> {
        ConnectionManager::new_with_config(self.client.clone(), manager_config())
            .await
            .map_err(|e| self.connect_err(e))
    }

    /// Like [`Endpoint::manager`], retrying with backoff (100 ms doubling
    /// to 5 s) until Redis answers or `give_up` elapses (`Duration::ZERO`:
    /// one attempt). Later connection losses are healed by the manager.
    pub async fn manager_retrying(
        &self,
        give_up: Duration,
    ) -> Result<ConnectionManager, ConnError> {
        let start = tokio::time::Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .without_max_times();
        let attempt = || ConnectionManager::new_with_config(self.client.clone(), manager_config());
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            // Time spent in attempts counts too: `give_up` is wall time.
            .when(|_| start.elapsed() < give_up)
            .notify(|e, delay| {
                tracing::warn!(
                    "redis at {} not reachable yet ({e}); retrying in {delay:?}",
                    self.redacted
                );
            })
            .await
            .map_err(|e| self.connect_err(e))
    }

    /// A plain multiplexed connection, for short-lived commands (`dlq`,
    /// `produce`, the demo) that fail rather than wait.
    pub async fn multiplexed(&self) -> Result<MultiplexedConnection, ConnError> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| self.connect_err(e))
    }
}

/// Bounded timeouts so a hung Redis surfaces as errors (and retries by the
/// caller) instead of stalled claims.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// True when Redis answers `PING`.
pub async fn ping(conn: &mut ConnectionManager) -> bool {
    matches!(
        redis::cmd("PING").query_async::<Value>(conn).await,
        Ok(Value::SimpleString(_)) | Ok(Value::Okay)
    )
}

/// The URL with any password masked, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_masks_only_the_credentials() {
        assert_eq!(
            redacted("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn an_invalid_url_is_refused_without_its_password() {
        let Err(e) = Endpoint::open("nope://:secret@host") else {
            panic!("accepted an invalid url");
        };
        assert!(matches!(e, ConnError::Url { .. }));
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
