//! The one place a `redis_url` becomes a client or a connection: the
//! source, plugin kv state, `dlq`, `produce`, the demo and `check` all
//! connect through here, so connection settings (TLS, ACL users, Sentinel,
//! Cluster) live in one seam. [`Conn`] is the one command interface over
//! them: a connection behind Sentinel follows the primary across a
//! failover; one to a Redis Cluster sends each command to the node serving
//! its slot and follows slots that move.

use std::path::Path;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{SingleNodeRoutingInfo, Slot};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, IntoConnectionInfo, Value};

use super::announcements::Announcements;
use super::topology::{self, Nodes, Topology};
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
/// names), sentinels that name no primary. Anything else is Redis's own
/// text.
pub fn cause(e: &redis::RedisError) -> String {
    if let Some(tls) = find_in_chain::<rustls::Error>(e) {
        return tls_cause(tls);
    }
    match e.kind() {
        // Made by `Cluster::discovery_failed`, which names each seed's cause.
        redis::ErrorKind::ClusterConnectionNotFound if e.detail().is_some() => {
            return format!(
                "cluster discovery failed: {}",
                e.detail().unwrap_or_default()
            )
        }
        redis::ErrorKind::MasterNameNotFoundBySentinel => {
            return format!(
                "sentinel discovery failed: no sentinel names a usable primary by the name in \
                 redis_url ({e})"
            )
        }
        redis::ErrorKind::EmptySentinelList => {
            return "sentinel discovery failed: redis_url lists no sentinel".into()
        }
        _ => {}
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
    target: Target,
    /// For logs and errors.
    redacted: String,
}

/// What connections are made to.
#[derive(Clone)]
enum Target {
    /// One server (boxed: a client with TLS settings is large).
    Single(Box<redis::Client>),
    /// The primary the sentinels name, asked again after a failover.
    Sentinel(Arc<Sentinels>),
    /// The nodes of a Redis Cluster, discovered from the seeds.
    Cluster(Arc<Cluster>),
}

/// A Redis Cluster's client and, to tell why discovery failed, a one-server
/// client for each seed node.
struct Cluster {
    client: ClusterClient,
    seeds: Vec<(String, redis::Client)>,
}

/// How long the redis crate may take to read the slot map and connect to
/// the nodes before each seed is asked why it did not.
const DISCOVERY_WITHIN: Duration = Duration::from_secs(5);

/// How long each step of asking one seed (TCP connect; login and `CLUSTER
/// SLOTS`) may take.
const SEED_STEP_WITHIN: Duration = Duration::from_secs(2);

impl Cluster {
    /// Connects to the seeds and reads the slot map (the redis crate does).
    async fn connect(&self) -> redis::RedisResult<ClusterConnection> {
        let e = match tokio::time::timeout(DISCOVERY_WITHIN, self.client.get_async_connection())
            .await
        {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => redis::RedisError::from((
                redis::ErrorKind::Io,
                "cluster discovery timed out",
                format!("no slot map within {DISCOVERY_WITHIN:?}"),
            )),
        };
        Err(self.discovery_failed(e).await)
    }

    /// The crate says only that no seed gave a slot map: asks each seed
    /// alone, so the error names a refused connection, a TLS or login
    /// failure, or a node without cluster support, per seed.
    async fn discovery_failed(&self, e: redis::RedisError) -> redis::RedisError {
        // All seeds at once: the answer takes one timeout, not one per seed.
        let asked: Vec<_> = self
            .seeds
            .iter()
            .map(|(host, client)| (host, tokio::spawn(ask_seed(client.clone()))))
            .collect();
        let mut causes = Vec::with_capacity(asked.len());
        for (host, task) in asked {
            let why = match task.await {
                Err(panicked) => format!("could not be asked ({panicked})"),
                Ok(SeedAnswer::NoTcp(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "connection refused: nothing listens at that host and port".to_string()
                }
                Ok(SeedAnswer::NoTcp(io)) => format!("cannot connect ({io})"),
                Ok(SeedAnswer::TcpTimeout) => format!(
                    "no TCP connection within {SEED_STEP_WITHIN:?} (the host is unreachable, \
                     or a firewall drops the packets)"
                ),
                Ok(SeedAnswer::Silent) => format!(
                    "accepts TCP connections but gave no slot map within {SEED_STEP_WITHIN:?} \
                     (the server is hung or overloaded, or not Redis)"
                ),
                Ok(SeedAnswer::Redis(Err(e)))
                    if e.detail()
                        .is_some_and(|d| d.contains("cluster support disabled")) =>
                {
                    "not a cluster node (cluster support is disabled there)".to_string()
                }
                Ok(SeedAnswer::Redis(Err(e))) => cause(&e),
                Ok(SeedAnswer::Redis(Ok(slots))) if slots.is_empty() => {
                    "serves no slots: the cluster is not set up yet".to_string()
                }
                Ok(SeedAnswer::Redis(Ok(_))) => {
                    format!("answers CLUSTER SLOTS, but the cluster client failed ({e})")
                }
            };
            causes.push(format!("{host}: {why}"));
        }
        redis::RedisError::from((
            redis::ErrorKind::ClusterConnectionNotFound,
            "cluster discovery failed",
            format!(
                "no seed node in redis_url gave the slot map ({})",
                causes.join("; ")
            ),
        ))
    }
}

/// What one seed said when asked for the slot map alone.
enum SeedAnswer {
    /// The TCP connection failed.
    NoTcp(std::io::Error),
    /// The TCP connection did not complete in time.
    TcpTimeout,
    /// Connected, but the login or `CLUSTER SLOTS` got no answer in time.
    Silent,
    /// Redis's answer to the login and `CLUSTER SLOTS`.
    Redis(redis::RedisResult<Vec<Value>>),
}

/// Asks one seed, step by step, so a hang is placed: at the TCP connect
/// or after it.
async fn ask_seed(client: redis::Client) -> SeedAnswer {
    // Cluster URLs name TCP seeds only.
    if let ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } =
        client.get_connection_info().addr()
    {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), *port));
        match tokio::time::timeout(SEED_STEP_WITHIN, tcp).await {
            Err(_) => return SeedAnswer::TcpTimeout,
            Ok(Err(io)) => return SeedAnswer::NoTcp(io),
            Ok(Ok(_closed_at_once)) => {}
        }
    }
    let asked = tokio::time::timeout(SEED_STEP_WITHIN, async move {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<Value>>(&mut c)
            .await
    });
    match asked.await {
        // The client's own timeouts count too: TCP is up, Redis is not.
        Err(_) => SeedAnswer::Silent,
        Ok(Err(e)) if e.is_timeout() => SeedAnswer::Silent,
        Ok(r) => SeedAnswer::Redis(r),
    }
}

/// The sentinels of one primary; one lookup at a time.
struct Sentinels {
    lookup: tokio::sync::Mutex<Lookup>,
    /// Their `+switch-master` announcements, watched once a managed
    /// connection exists.
    announcements: Arc<Announcements>,
}

struct Lookup {
    client: SentinelClient,
    /// When a lookup last failed: lookups are spaced by
    /// [`LOOKUP_SPACING`] so a burst of failing commands asks once.
    failed_at: Option<tokio::time::Instant>,
}

/// Least time between two failed sentinel lookups.
const LOOKUP_SPACING: Duration = Duration::from_millis(100);

impl Sentinels {
    /// A client for the current primary (the redis crate asks each
    /// sentinel in turn and checks that the one named answers `ROLE` as
    /// a primary).
    async fn primary(&self) -> redis::RedisResult<redis::Client> {
        self.lookup.lock().await.client.async_get_client().await
    }
}

impl Endpoint {
    /// The source's Redis: its `redis_url`, `[source.tls]` and
    /// `sentinel_password`.
    pub fn for_source(cfg: &SourceConfig) -> Result<Endpoint, ConnError> {
        Endpoint::open_with(&cfg.redis_url, &cfg.tls, cfg.sentinel_password.as_deref())
    }

    /// Parses `url`; a `rediss://` URL connects with `tls` (whose files
    /// are read now, so a missing one fails here, by name).
    pub fn open(url: &str, tls: &TlsConfig) -> Result<Endpoint, ConnError> {
        Endpoint::open_with(url, tls, None)
    }

    /// Like [`Endpoint::open`]; `sentinel_password` logs in to the
    /// sentinels of a `redis+sentinel://` URL.
    pub fn open_with(
        url: &str,
        tls: &TlsConfig,
        sentinel_password: Option<&str>,
    ) -> Result<Endpoint, ConnError> {
        let redacted = redacted(url);
        let url_err = |source| ConnError::Url {
            url: redacted.clone(),
            source,
        };
        let tls_err = |what: String| ConnError::Tls {
            url: redacted.clone(),
            what,
        };
        let target = match topology::parse(url) {
            Ok(Topology::Single) => {
                Target::Single(Box::new(single_client(url, tls, &url_err, &tls_err)?))
            }
            Ok(Topology::Sentinel { nodes, master, db }) => {
                let setup_err = |e: SetupError| match e {
                    SetupError::Redis(e) => url_err(e),
                    SetupError::Tls(what) => tls_err(what),
                };
                let client = sentinel_client(&nodes, &master, db, tls, sentinel_password)
                    .map_err(setup_err)?;
                let watched =
                    sentinel_clients(&nodes, tls, sentinel_password).map_err(setup_err)?;
                Target::Sentinel(Arc::new(Sentinels {
                    lookup: tokio::sync::Mutex::new(Lookup {
                        client,
                        failed_at: None,
                    }),
                    announcements: Arc::new(Announcements::new(watched, master, redacted.clone())),
                }))
            }
            Ok(Topology::Cluster { nodes }) => {
                Target::Cluster(Arc::new(cluster(&nodes, tls, &url_err, &tls_err)?))
            }
            Err(what) => {
                return Err(url_err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad redis_url",
                    what,
                ))))
            }
        };
        Ok(Endpoint { target, redacted })
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
    pub async fn manager(&self) -> Result<Conn, ConnError> {
        self.connect_managed()
            .await
            .map_err(|e| self.connect_err(e))
    }

    async fn connect_managed(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Single(client) => Ok(Conn(Inner::Managed(
                ConnectionManager::new_with_config((**client).clone(), manager_config()).await?,
            ))),
            Target::Sentinel(sentinels) => {
                sentinels.announcements.start();
                let announced = sentinels.announcements.count();
                let primary = sentinels.primary().await?;
                let addr = primary.get_connection_info().addr().to_string();
                let manager = ConnectionManager::new_with_config(primary, manager_config()).await?;
                Ok(Conn(Inner::Followed(Arc::new(Follower {
                    sentinels: sentinels.clone(),
                    current: std::sync::Mutex::new((0, manager, addr)),
                    announced: AtomicU64::new(announced),
                    redacted: self.redacted.clone(),
                }))))
            }
            Target::Cluster(cluster) => Ok(Conn(Inner::Cluster(cluster.connect().await?))),
        }
    }

    /// Like [`Endpoint::manager`], retrying with backoff (100 ms doubling
    /// to 5 s) until Redis answers or `give_up` elapses (`Duration::ZERO`:
    /// one attempt); `on_retry` hears the cause of each failed attempt.
    /// Later connection losses are healed by the manager, and a Sentinel
    /// failover by following the new primary.
    pub async fn manager_retrying(
        &self,
        give_up: Duration,
        on_retry: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Conn, ConnError> {
        let start = tokio::time::Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .without_max_times();
        let attempt = || self.connect_managed();
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
    /// `produce`, the demo) that fail rather than wait. Behind Sentinel it
    /// stays with the primary named when it connected.
    pub async fn multiplexed(&self) -> Result<Conn, ConnError> {
        let client = match &self.target {
            Target::Single(client) => (**client).clone(),
            Target::Sentinel(sentinels) => {
                sentinels.primary().await.map_err(|e| self.connect_err(e))?
            }
            Target::Cluster(_) => return self.manager().await,
        };
        client
            .get_multiplexed_async_connection()
            .await
            .map(|c| Conn(Inner::Plain(c)))
            .map_err(|e| self.connect_err(e))
    }
}

/// The client of a one-server URL.
fn single_client(
    url: &str,
    tls: &TlsConfig,
    url_err: &dyn Fn(redis::RedisError) -> ConnError,
    tls_err: &dyn Fn(String) -> ConnError,
) -> Result<redis::Client, ConnError> {
    let mut info = url.into_connection_info().map_err(url_err)?;
    Ok(match info.addr().clone() {
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
            let certs = tls_certificates(tls).map_err(tls_err)?;
            redis::Client::build_with_tls(info, certs)
                .map_err(|e| tls_err(format!("bad certificate or key: {e}")))?
        }
        _ => redis::Client::open(info).map_err(url_err)?,
    })
}

/// The redis crate's cluster client for the seeds in `nodes`, with the
/// URL's credentials for every node and, with TLS, `tls` for each.
fn cluster(
    nodes: &Nodes,
    tls: &TlsConfig,
    url_err: &dyn Fn(redis::RedisError) -> ConnError,
    tls_err: &dyn Fn(String) -> ConnError,
) -> Result<Cluster, ConnError> {
    let seeds = nodes
        .hosts
        .iter()
        .map(|h| {
            Ok((
                h.clone(),
                single_client(&nodes.url(h, true, 0), tls, url_err, tls_err)?,
            ))
        })
        .collect::<Result<Vec<_>, ConnError>>()?;
    let infos = nodes
        .hosts
        .iter()
        .map(|h| nodes.url(h, true, 0).into_connection_info())
        .collect::<redis::RedisResult<Vec<_>>>()
        .map_err(url_err)?;
    // Timeouts as for one server (`manager_config`): a hung node surfaces
    // as an error the caller retries.
    let mut b = ClusterClientBuilder::new(infos)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(10));
    if nodes.tls {
        let mode = if tls.insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        b = b.tls(mode).certs(tls_certificates(tls).map_err(tls_err)?);
    }
    let client = b.build().map_err(|e| match e.kind() {
        redis::ErrorKind::InvalidClientConfig if nodes.tls => {
            tls_err(format!("bad certificate or key: {e}"))
        }
        _ => url_err(e),
    })?;
    Ok(Cluster { client, seeds })
}

enum SetupError {
    Redis(redis::RedisError),
    Tls(String),
}

impl From<redis::RedisError> for SetupError {
    fn from(e: redis::RedisError) -> Self {
        SetupError::Redis(e)
    }
}

/// The redis crate's Sentinel client for `master`: the URL's credentials
/// and `db` are the primary's, `sentinel_password` the sentinels'; with
/// TLS, both sentinels and primary are verified with `tls`.
fn sentinel_client(
    nodes: &Nodes,
    master: &str,
    db: i64,
    tls: &TlsConfig,
    sentinel_password: Option<&str>,
) -> Result<SentinelClient, SetupError> {
    let addrs = nodes
        .hosts
        .iter()
        .map(|h| {
            Ok(nodes
                .url(h, false, 0)
                .into_connection_info()?
                .addr()
                .clone())
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let auth = nodes.auth_url().into_connection_info()?;
    let auth = auth.redis_settings();
    let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_db(db);
    if let Some(user) = auth.username() {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = auth.password() {
        b = b.set_client_to_redis_password(password);
    }
    if let Some(password) = sentinel_password {
        b = b.set_client_to_sentinel_password(password);
    }
    if nodes.tls {
        let mode = if tls.insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        let certs = tls_certificates(tls).map_err(SetupError::Tls)?;
        b = b
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_sentinel_tls_mode(mode)
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs);
    }
    b.build().map_err(|e| match e.kind() {
        redis::ErrorKind::InvalidClientConfig if nodes.tls => {
            SetupError::Tls(format!("bad certificate or key: {e}"))
        }
        _ => SetupError::Redis(e),
    })
}

/// One client per sentinel, for watching their announcements: the
/// sentinels' password, and with TLS the same verification as
/// [`sentinel_client`].
fn sentinel_clients(
    nodes: &Nodes,
    tls: &TlsConfig,
    sentinel_password: Option<&str>,
) -> Result<Vec<redis::Client>, SetupError> {
    nodes
        .hosts
        .iter()
        .map(|h| {
            let mut info = nodes.url(h, false, 0).into_connection_info()?;
            if let Some(password) = sentinel_password {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            if let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() {
                info = info.set_addr(ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                });
                let certs = tls_certificates(tls).map_err(SetupError::Tls)?;
                return redis::Client::build_with_tls(info, certs)
                    .map_err(|e| SetupError::Tls(format!("bad certificate or key: {e}")));
            }
            Ok(redis::Client::open(info)?)
        })
        .collect()
}

/// A connection from [`Endpoint`]: one Redis command interface whatever
/// the topology. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Conn(Inner);

#[derive(Clone)]
enum Inner {
    /// One server, reconnecting after a loss.
    Managed(ConnectionManager),
    /// One server, failing when lost (short-lived users).
    Plain(MultiplexedConnection),
    /// The primary behind Sentinel, followed across failovers.
    Followed(Arc<Follower>),
    /// The nodes of a Redis Cluster (cheap to clone: a handle to the
    /// crate's routing task).
    Cluster(ClusterConnection),
}

impl Conn {
    /// True for a Redis Cluster: a transaction must then stay within one
    /// hash slot (the caller splits one that would not).
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }
}

/// Pipelines and transactions on a cluster. The redis crate follows
/// `MOVED`, `ASK` and `TRYAGAIN` for single commands, but not safely for
/// the others:
/// - a pipeline redirected by `ASK` gets `ASKING` before its first command
///   only, so the rest bounce back and the crate sends the whole pipeline
///   again, repeating the commands that ran (a record pushed twice). So on
///   a cluster a pipeline runs as a transaction on its slot: whole or not
///   at all, which makes sending it again safe;
/// - a command refused while queued aborts `EXEC`, whose error the crate
///   does not look into. [`transaction`] does.
///
/// A pipeline whose commands span slots is refused by the crate before
/// anything is sent: [`split_by_slot`] sends it in parts.
async fn cluster_commands(
    conn: &ClusterConnection,
    pipe: &redis::Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    if pipe.is_transaction() {
        return transaction(conn, pipe, offset, count).await;
    }
    match as_transaction(conn, pipe.cmd_iter()).await {
        Err(e) if is_cross_slot(&e) => split_by_slot(conn, pipe).await,
        r => r.map(|all| all.into_iter().skip(offset).take(count).collect()),
    }
}

/// `cmds` as one transaction; each command's reply.
async fn as_transaction<'a>(
    conn: &ClusterConnection,
    cmds: impl Iterator<Item = &'a Cmd>,
) -> redis::RedisResult<Vec<Value>> {
    let mut tx = redis::pipe();
    tx.atomic();
    for c in cmds {
        tx.add_command(c.clone());
    }
    let n = tx.len();
    match transaction(conn, &tx, n + 1, 1).await?.pop() {
        Some(Value::Array(replies)) if replies.len() == n => Ok(replies),
        other => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a cluster transaction answered something other than its replies",
            format!("{other:?}"),
        ))),
    }
}

/// How many times a transaction refused because its slot is migrating is
/// sent again; with the backoff below that is about 10 s, far longer than
/// `redis-cli --cluster reshard` keeps one slot migrating.
const SLOT_MIGRATION_ATTEMPTS: u32 = 60;

/// Sends a transaction until its slot holds still:
/// - `MOVED` inside: sent again to the node named (the crate's slot map
///   catches up at the next single command on that slot);
/// - `ASK` or `TRYAGAIN` inside (the slot is migrating: its keys are on
///   both nodes, or those it touches have left): sent again after a short
///   wait, until the migration of that slot completes and the answer is
///   `MOVED` or success.
///
/// Nothing of an aborted transaction ran, so sending it again is safe.
async fn transaction(
    conn: &ClusterConnection,
    pipe: &redis::Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let mut to: Option<SingleNodeRoutingInfo> = None;
    let mut wait = Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        let mut c = conn.clone();
        let r = match &to {
            None => c.req_packed_commands(pipe, offset, count).await,
            Some(node) => {
                c.route_pipeline(pipe.clone(), offset, count, node.clone())
                    .await
            }
        };
        let Err(e) = &r else { return r };
        attempt += 1;
        if attempt >= SLOT_MIGRATION_ATTEMPTS {
            return r.map_err(|e| name_refused(e, pipe));
        }
        let moving = slot_moving(e);
        if let Some(m) = &moving {
            metrics::counter!(crate::telemetry::REDIS_REDIRECTS, "kind" => m.kind()).increment(1);
        }
        match moving {
            Some(SlotMove::Moved { host, port }) => {
                to = Some(SingleNodeRoutingInfo::ByAddress { host, port })
            }
            Some(SlotMove::Migrating(_)) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            None => return r.map_err(|e| name_refused(e, pipe)),
        }
    }
}

/// A transaction that Redis aborted (`EXECABORT`) because it refused a
/// command when queued (an ACL's `NOPERM`, say) ran none of its commands,
/// and Redis's own text does not say which one it refused (`No
/// permissions to access a key`). Makes it the refusal itself, naming the
/// command and its key, so `cause` and the callers (the `SORT` claim's
/// fallback) see the refusal's code.
fn name_refused(e: redis::RedisError, pipe: &redis::Pipeline) -> redis::RedisError {
    if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort) {
        return e;
    }
    let Some(errors) = e.clone().into_server_errors() else {
        return e;
    };
    let Some((at, refusal)) = errors.iter().find(|(_, s)| s.code() != "EXECABORT") else {
        return e;
    };
    let named = pipe
        .cmd_iter()
        .nth(*at)
        .map(command_name)
        .unwrap_or_else(|| "?".into());
    let more = match errors.len() {
        1 => String::new(),
        n => format!(", and {} more", n - 1),
    };
    let text = format!(
        "-{} {} (refused when queued: command {} of {}, `{named}`{more}, of a transaction \
         Redis then ran none of)",
        refusal.code(),
        refusal.details().unwrap_or_default(),
        at + 1,
        pipe.len(),
    )
    .replace(['\r', '\n'], " ");
    // A RESP error line: parsed, it keeps Redis's code and kind.
    let line = format!("{text}\r\n");
    match redis::parse_redis_value(line.as_bytes()).map(|v| v.extract_error()) {
        Ok(Err(named)) => named,
        _ => e,
    }
}

/// A command's name and key, for errors: `RPUSH analytics-tyk_3`.
fn command_name(cmd: &Cmd) -> String {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    });
    let name = args.next().unwrap_or_default().to_ascii_uppercase();
    match args.next() {
        Some(key) if key.len() > 120 => format!("{name} {}…", &key[..key.floor_char_boundary(120)]),
        Some(key) => format!("{name} {key}"),
        None => name,
    }
}

/// Whether the crate refused a pipeline for spanning slots (it does so
/// before sending: a server's `CROSSSLOT` would be a reply value).
fn is_cross_slot(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)
}

/// What a refused transaction says about its slot.
#[derive(Debug, PartialEq)]
enum SlotMove {
    /// `MOVED`: the slot is served by `host:port` now.
    Moved { host: String, port: u16 },
    /// `ASK`, `TRYAGAIN` (the code, lower case): the slot is migrating.
    Migrating(&'static str),
}

impl SlotMove {
    /// The `kind` label of the redirect counter.
    fn kind(&self) -> &'static str {
        match self {
            SlotMove::Moved { .. } => "moved",
            SlotMove::Migrating(kind) => kind,
        }
    }
}

fn slot_moving(e: &redis::RedisError) -> Option<SlotMove> {
    let errors = e.clone().into_server_errors()?;
    let mut migrating = None;
    for (_, s) in errors.iter() {
        match s.code() {
            "MOVED" => {
                // "MOVED <slot> <host>:<port>"
                let addr = s.details()?.split_ascii_whitespace().nth(1)?;
                let (host, port) = addr.rsplit_once(':')?;
                return Some(SlotMove::Moved {
                    host: host.to_string(),
                    port: port.parse().ok()?,
                });
            }
            "ASK" => migrating = Some(SlotMove::Migrating("ask")),
            "TRYAGAIN" => migrating = Some(SlotMove::Migrating("tryagain")),
            _ => {}
        }
    }
    migrating
}

/// Sends a pipeline that spans slots in parts, one per slot of its
/// commands' first arguments (their key, for the commands pumphouse
/// pipelines), each a transaction, in parallel; replies in the pipeline's
/// order. Within a part the commands keep their order; a part that still
/// spans slots (a script's keys) is sent command by command.
async fn split_by_slot(
    conn: &ClusterConnection,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let mut parts: Vec<(Slot, Vec<usize>, redis::Pipeline)> = Vec::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let slot = match cmd.args_iter().nth(1) {
            Some(redis::Arg::Simple(key)) => Slot::for_key(key),
            _ => Slot::for_key(b""),
        };
        let part = match parts.iter().position(|(s, ..)| *s == slot) {
            Some(p) => p,
            None => {
                parts.push((slot, Vec::new(), redis::pipe()));
                parts.len() - 1
            }
        };
        parts[part].1.push(i);
        parts[part].2.add_command(cmd.clone());
    }
    let sent: Vec<_> = parts
        .into_iter()
        .map(|(_, at, part)| {
            let conn = conn.clone();
            let task = tokio::spawn(async move {
                match as_transaction(&conn, part.cmd_iter()).await {
                    Err(e) if is_cross_slot(&e) => {
                        let mut c = conn.clone();
                        let mut out = Vec::with_capacity(part.len());
                        for cmd in part.cmd_iter() {
                            out.push(c.req_packed_command(cmd).await?);
                        }
                        Ok(out)
                    }
                    r => r,
                }
            });
            (at, task)
        })
        .collect();
    let mut replies = vec![Value::Nil; pipe.len()];
    for (at, task) in sent {
        let values = task.await.map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "a cluster pipeline part failed",
                e.to_string(),
            ))
        })??;
        for (i, v) in at.into_iter().zip(values) {
            replies[i] = v;
        }
    }
    Ok(replies)
}

/// A managed connection to the primary the sentinels named, replaced when
/// an answer says the primary moved.
struct Follower {
    sentinels: Arc<Sentinels>,
    /// The connection, its generation (bumped on each replacement, so
    /// concurrent commands that saw the same failure replace it once) and
    /// the primary's address.
    current: std::sync::Mutex<(u64, ConnectionManager, String)>,
    /// The sentinels' announcement count the connection is up to date with.
    announced: AtomicU64,
    redacted: String,
}

impl Follower {
    fn current(&self) -> (u64, ConnectionManager) {
        let c = self.current.lock().expect("primary lock");
        (c.0, c.1.clone())
    }

    /// Before a command: if the sentinels announced a failover since the
    /// connection was made, ask them for the primary now rather than
    /// wait for the old one to refuse (it may answer as a primary for
    /// seconds more).
    async fn catch_up(&self) {
        let announced = self.sentinels.announcements.count();
        if announced == self.announced.load(Relaxed) {
            return;
        }
        let (seen, _) = self.current();
        if self
            .follow(seen, "the sentinels announced a failover (+switch-master)")
            .await
        {
            self.announced.fetch_max(announced, Relaxed);
        }
    }

    /// Asks the sentinels for the primary and connects to it, unless the
    /// connection seen as generation `seen` was replaced meanwhile. True
    /// when a connection newer than `seen` is in place.
    async fn follow(&self, seen: u64, why: &str) -> bool {
        let mut lookup = self.sentinels.lookup.lock().await;
        if self.current().0 != seen {
            return true;
        }
        if lookup
            .failed_at
            .is_some_and(|t| t.elapsed() < LOOKUP_SPACING)
        {
            return false;
        }
        let current_addr = self.current.lock().expect("primary lock").2.clone();
        let found = async {
            let primary = lookup.client.async_get_client().await?;
            let addr = primary.get_connection_info().addr().to_string();
            if addr == current_addr {
                // Still the same primary: its manager reconnects by itself.
                return Ok(None);
            }
            let manager = ConnectionManager::new_with_config(primary, manager_config()).await?;
            Ok::<_, redis::RedisError>(Some((addr, manager)))
        }
        .await;
        match found {
            Ok(None) => {
                lookup.failed_at = None;
                true
            }
            Ok(Some((addr, manager))) => {
                lookup.failed_at = None;
                *self.current.lock().expect("primary lock") = (seen + 1, manager, addr.clone());
                tracing::warn!(
                    "redis at {}: {why}; following the primary the sentinels name, at {addr}",
                    self.redacted
                );
                metrics::counter!(crate::telemetry::REDIS_PRIMARY_CHANGES).increment(1);
                true
            }
            Err(e) => {
                lookup.failed_at = Some(tokio::time::Instant::now());
                tracing::warn!(
                    "redis at {}: {why}; the sentinels name no usable primary yet ({})",
                    self.redacted,
                    cause(&e)
                );
                false
            }
        }
    }

    async fn command(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        self.catch_up().await;
        let (seen, mut conn) = self.current();
        let r = conn.req_packed_command(cmd).await;
        let sign = match &r {
            Err(e) => primary_moved(e),
            Ok(v) => moved_in_reply(std::slice::from_ref(v)),
        };
        match sign {
            Some((why, retry)) if self.follow(seen, &why).await && retry => {
                self.current().1.req_packed_command(cmd).await
            }
            _ => r,
        }
    }

    async fn commands(
        &self,
        pipe: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        self.catch_up().await;
        let (seen, mut conn) = self.current();
        let r = conn.req_packed_commands(pipe, offset, count).await;
        let sign = match &r {
            Err(e) => primary_moved(e),
            Ok(v) => moved_in_reply(v),
        };
        match sign {
            Some((why, retry)) if self.follow(seen, &why).await && retry => {
                self.current()
                    .1
                    .req_packed_commands(pipe, offset, count)
                    .await
            }
            _ => r,
        }
    }
}

/// Whether an error says the primary may have moved (a Sentinel failover):
/// why, and whether the command surely did not run, so that sending it to
/// the new primary cannot run it twice.
fn primary_moved(e: &redis::RedisError) -> Option<(String, bool)> {
    if let Some(code @ ("READONLY" | "LOADING" | "MASTERDOWN")) = e.code() {
        return Some((format!("it answered {code}"), true));
    }
    if e.is_connection_refusal() {
        return Some(("connection refused".into(), true));
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        return Some((format!("connection lost ({})", cause(e)), false));
    }
    None
}

/// The same sign inside a reply: a transaction or pipeline carries its
/// commands' errors as values (`EXECABORT` with the first refusal).
fn moved_in_reply(values: &[Value]) -> Option<(String, bool)> {
    values.iter().find_map(|v| match v {
        Value::ServerError(e) => match e.code() {
            code @ ("READONLY" | "LOADING" | "MASTERDOWN") => {
                Some((format!("it answered {code}"), false))
            }
            // Redis names only the transaction, not the refusal in it.
            "EXECABORT" => Some(("it aborted a transaction".into(), false)),
            _ => None,
        },
        Value::Array(items) => moved_in_reply(items),
        _ => None,
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Managed(c) => c.req_packed_command(cmd),
            Inner::Plain(c) => c.req_packed_command(cmd),
            Inner::Followed(f) => Box::pin(async move { f.command(cmd).await }),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Managed(c) => c.req_packed_commands(pipe, offset, count),
            Inner::Plain(c) => c.req_packed_commands(pipe, offset, count),
            Inner::Followed(f) => Box::pin(async move { f.commands(pipe, offset, count).await }),
            Inner::Cluster(c) => {
                Box::pin(async move { cluster_commands(c, pipe, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Managed(c) => c.get_db(),
            Inner::Plain(c) => c.get_db(),
            Inner::Followed(f) => f.current().1.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
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
pub async fn ping(conn: &mut Conn) -> bool {
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
    fn answers_of_a_moved_primary_are_recognised() {
        let readonly = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert_eq!(
            primary_moved(&readonly),
            Some(("it answered READONLY".into(), true))
        );
        let wrongtype = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert_eq!(primary_moved(&wrongtype), None);
        let lost =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(primary_moved(&lost), Some((_, false))));
    }

    fn server_error(reply: &[u8]) -> redis::RedisError {
        redis::parse_redis_value(reply)
            .expect("a RESP error")
            .extract_error()
            .expect_err("an error reply")
    }

    #[test]
    fn a_transaction_refused_for_a_moving_slot_is_recognised() {
        assert_eq!(
            slot_moving(&server_error(b"-MOVED 3999 127.0.0.1:7002\r\n")),
            Some(SlotMove::Moved {
                host: "127.0.0.1".into(),
                port: 7002
            })
        );
        assert_eq!(
            slot_moving(&server_error(b"-ASK 3999 127.0.0.1:7002\r\n")),
            Some(SlotMove::Migrating("ask"))
        );
        assert_eq!(
            slot_moving(&server_error(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
            )),
            Some(SlotMove::Migrating("tryagain"))
        );
        assert_eq!(
            slot_moving(&server_error(b"-WRONGTYPE Operation against a key\r\n")),
            None
        );
        let lost =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(slot_moving(&lost), None);
    }

    #[test]
    fn errors_other_than_an_aborted_transaction_are_left_alone() {
        // (An aborted transaction comes only from a connection: the
        // cluster end-to-end tests see it named.)
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LLEN")
            .arg("a")
            .cmd("RPUSH")
            .arg("forbidden")
            .arg("x");
        let aborted = redis::RedisError::from(std::io::Error::other("not aborted"));
        assert_eq!(name_refused(aborted, &pipe).kind(), redis::ErrorKind::Io);
        let refusal = server_error(b"-NOPERM No permissions to access a key\r\n");
        assert_eq!(refusal.code(), Some("NOPERM"));
        let named = name_refused(refusal.clone(), &pipe);
        // Not an EXECABORT: left alone.
        assert_eq!(named.to_string(), refusal.to_string());
    }

    #[test]
    fn a_command_is_named_by_its_name_and_key() {
        let mut c = redis::cmd("rpush");
        c.arg("analytics_3").arg("record");
        assert_eq!(command_name(&c), "RPUSH analytics_3");
        assert_eq!(command_name(&redis::cmd("ping")), "PING");
    }

    #[tokio::test]
    async fn an_undiscoverable_cluster_names_each_seed() {
        // Nothing listens on port 1 or 2 of loopback.
        let endpoint = Endpoint::open(
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
            &TlsConfig::default(),
        )
        .unwrap();
        let Err(e) = endpoint.manager().await else {
            panic!("connected to a cluster on ports 1 and 2");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("cluster discovery failed")
                && msg.contains("127.0.0.1:1: connection refused")
                && msg.contains("127.0.0.1:2: connection refused"),
            "{msg}"
        );
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
