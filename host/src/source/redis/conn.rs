//! The one place a `redis_url` becomes a client or a connection: the
//! source, plugin kv state, `dlq`, `produce`, the demo and `check` all
//! connect through here, so connection settings (TLS, ACL users, and later
//! Sentinel and Cluster) live in one seam.

use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};

use crate::config::{SourceConfig, TlsConfig};

/// Opening or connecting to a Redis failed. URLs are redacted.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("invalid redis_url {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    /// A `[source.tls]` file could not be read or parsed.
    #[error("tls for {url}: {what}")]
    Tls { url: String, what: String },
    #[error("cannot connect to redis at {url}: {}", cause(.source))]
    Connect {
        url: String,
        source: redis::RedisError,
    },
}

/// What a Redis error means for the user, naming the cause: a refused
/// connection, a TLS handshake failure (untrusted certificate, wrong name,
/// a client certificate the server wants or refuses), a failed login
/// (`WRONGPASS`), a missing permission (`NOPERM`, with the command Redis
/// names). Anything else is Redis's own text.
pub fn cause(e: &redis::RedisError) -> String {
    if let Some(tls) = find_in_chain::<rustls::Error>(e) {
        return tls_cause(tls);
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return "authentication failed (WRONGPASS): the user or password in redis_url is wrong, \
                or the user is disabled"
            .into();
    }
    match e.code() {
        Some("WRONGPASS") => {
            return format!(
                "authentication failed (WRONGPASS): {}",
                e.detail()
                    .unwrap_or("the user or password in redis_url is wrong")
            )
        }
        Some("NOAUTH") => {
            return "authentication required (NOAUTH): redis_url has no password, \
                    and this Redis wants one"
                .into()
        }
        Some("NOPERM") => {
            return format!(
                "permission denied (NOPERM): {}; see the ACL in the README (Production Redis)",
                e.detail()
                    .unwrap_or("the ACL user may not run a command pumphouse needs")
            )
        }
        _ => {}
    }
    if let Some(io) = find_in_chain::<std::io::Error>(e) {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                return "connection refused: nothing listens at that host and port".into()
            }
            std::io::ErrorKind::TimedOut => return format!("connection timed out ({io})"),
            _ => {}
        }
    }
    e.to_string()
}

fn tls_cause(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "TLS handshake failed: the server certificate is not trusted ({e}); \
             set tls.ca_file to the CA that signed it"
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => format!(
            "TLS handshake failed: the server certificate is not valid for the host name \
             in redis_url ({e})"
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!("TLS handshake failed: bad server certificate ({e})")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "TLS handshake failed: the server refused the connection ({alert:?} alert); \
             it may want a client certificate it trusts (tls.cert_file, tls.key_file)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The first error of type `T` in `e`'s source chain, looking inside the
/// `Arc`s and `io::Error`s the redis crate wraps errors in.
fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    if let Some(t) = e.downcast_ref::<T>() {
        return Some(t);
    }
    if let Some(shared) = e.downcast_ref::<Shared>() {
        if let Some(t) = find_in_chain::<T>(&**shared) {
            return Some(t);
        }
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(t) = find_in_chain::<T>(inner) {
            return Some(t);
        }
    }
    e.source().and_then(|s| find_in_chain::<T>(s))
}

/// A parsed `redis_url`; nothing is connected until asked.
#[derive(Clone)]
pub struct Endpoint {
    client: redis::Client,
    /// For logs and errors.
    redacted: String,
}

impl Endpoint {
    /// The source's Redis: its `redis_url` and `[source.tls]`.
    pub fn for_source(cfg: &SourceConfig) -> Result<Endpoint, ConnError> {
        Endpoint::open(&cfg.redis_url, &cfg.tls)
    }

    /// Parses `url`; a `rediss://` URL connects with `tls` (whose files
    /// are read now, so a missing one fails here, by name).
    pub fn open(url: &str, tls: &TlsConfig) -> Result<Endpoint, ConnError> {
        let redacted = redacted(url);
        let url_err = |source| ConnError::Url {
            url: redacted.clone(),
            source,
        };
        let mut info = url.into_connection_info().map_err(url_err)?;
        let client = match info.addr().clone() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                info = info.set_addr(ConnectionAddr::TcpTls {
                    host,
                    port,
                    // `#insecure` in the URL stays honoured; the setting adds to it.
                    insecure: insecure || tls.insecure,
                    tls_params: None,
                });
                let tls_err = |what: String| ConnError::Tls {
                    url: redacted.clone(),
                    what,
                };
                let certs = tls_certificates(tls).map_err(tls_err)?;
                redis::Client::build_with_tls(info, certs)
                    .map_err(|e| tls_err(format!("bad certificate or key: {e}")))?
            }
            _ => redis::Client::open(info).map_err(url_err)?,
        };
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
    /// one attempt); `on_retry` hears the cause of each failed attempt.
    /// Later connection losses are healed by the manager.
    pub async fn manager_retrying(
        &self,
        give_up: Duration,
        on_retry: &(dyn Fn(&str) + Send + Sync),
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
                let cause = cause(e);
                tracing::warn!(
                    "redis at {} not usable yet ({cause}); retrying in {delay:?}",
                    self.redacted
                );
                on_retry(&cause);
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

/// Reads the PEM files `tls` names.
fn tls_certificates(tls: &TlsConfig) -> Result<redis::TlsCertificates, String> {
    fn read(field: &str, path: &Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("cannot read tls.{field} {}: {e}", path.display()))
    }
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("cert_file", cert)?,
            client_key: read("key_file", key)?,
        }),
        _ => None,
    };
    let root_cert = tls
        .ca_file
        .as_deref()
        .map(|p| read("ca_file", p))
        .transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
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
        let Err(e) = Endpoint::open("nope://:secret@host", &TlsConfig::default()) else {
            panic!("accepted an invalid url");
        };
        assert!(matches!(e, ConnError::Url { .. }));
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // Port 1 on loopback: nothing listens there.
        let endpoint = Endpoint::open("redis://127.0.0.1:1/0", &TlsConfig::default()).unwrap();
        let Err(e) = endpoint.multiplexed().await else {
            panic!("connected to port 1");
        };
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let tls = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let Err(e) = Endpoint::open("rediss://127.0.0.1:1/0", &tls) else {
            panic!("opened with a missing CA file");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("tls.ca_file") && msg.contains("/nonexistent/ca.pem"),
            "{msg}"
        );
    }
}
