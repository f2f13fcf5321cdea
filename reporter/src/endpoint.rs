//! What a `redis_url` names, parsed once at `build()`: one server, a
//! primary found through Sentinel, or a Redis Cluster, and what every
//! connection to it shares (credentials, database, TLS).
//!
//! The one-server forms and the credentials are read by the redis crate
//! (it does the percent-decoding); the multi-host forms are not URLs it
//! reads, so their hosts are split here.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use redis::{ConnectionAddr, IntoConnectionInfo};

/// Port of a sentinel written without one.
const SENTINEL_PORT: u16 = 26379;
/// Port of a Redis (or cluster node) written without one.
const REDIS_PORT: u16 = 6379;

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Addr::Tcp { host, port } => write!(f, "{host}:{port}"),
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The shape of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// `redis://`, `rediss://`, `redis+unix://`.
    Single(Addr),
    /// `redis[s]+sentinel://h1:p1,h2:p2/MASTER[/db]`: the primary the
    /// sentinels name `master`.
    Sentinel {
        sentinels: Vec<Addr>,
        master: String,
    },
    /// `redis[s]+cluster://h1:p1,h2:p2`: seed nodes; the key's owner is
    /// found by following `MOVED`.
    Cluster { seeds: Vec<Addr> },
}

/// A parsed `redis_url`, before its TLS files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub topology: Topology,
    /// `rediss…://`.
    pub tls: bool,
    /// `rediss://…#insecure`.
    pub insecure: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

/// Reads `url`. Errors never quote the credentials.
pub(crate) fn parse(url: &str) -> Result<Parsed, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(
            "must start with redis://, rediss://, redis+unix://, redis[s]+sentinel:// \
             or redis[s]+cluster://"
                .into(),
        );
    };
    let (kind, tls) = match scheme {
        "redis" | "redis+unix" | "unix" => ("single", false),
        "rediss" => ("single", true),
        "redis+sentinel" => ("sentinel", false),
        "rediss+sentinel" => ("sentinel", true),
        "redis+cluster" => ("cluster", false),
        "rediss+cluster" => ("cluster", true),
        other => return Err(format!("unknown scheme {other:?}://")),
    };
    let (rest, insecure) = match rest.split_once('#') {
        Some((r, "insecure")) if tls => (r, true),
        Some(_) => return Err("the only fragment read is #insecure, after rediss…://".into()),
        None => (rest, false),
    };
    if kind == "single" {
        // The redis crate reads one-server URLs; TLS is ours, so it gets
        // the plain scheme.
        let plain = if tls {
            format!("redis://{rest}")
        } else {
            format!("{scheme}://{rest}")
        };
        let info = plain
            .as_str()
            .into_connection_info()
            .map_err(|e| e.detail().unwrap_or("not a Redis URL").to_string())?;
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp {
                host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
                port: *port,
            },
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return Err("unsupported address".into()),
        };
        let s = info.redis_settings();
        return Ok(Parsed {
            topology: Topology::Single(addr),
            tls,
            insecure,
            user: s.username().map(str::to_string),
            password: s.password().map(str::to_string),
            db: s.db(),
        });
    }
    // Credentials end at the last `@` (one inside a password must be
    // written %40); the host list ends at the first `/` after them.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (host_list, path) = after.split_once('/').unwrap_or((after, ""));
    let default_port = if kind == "sentinel" {
        SENTINEL_PORT
    } else {
        REDIS_PORT
    };
    let hosts = host_list
        .split(',')
        .map(|h| host_port(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let (user, password) = match userinfo.filter(|u| !u.is_empty()) {
        Some(auth) => {
            let info = format!("redis://{auth}@localhost/0")
                .as_str()
                .into_connection_info()
                .map_err(|_| "the user or password does not parse".to_string())?;
            let s = info.redis_settings();
            (
                s.username().map(str::to_string),
                s.password().map(str::to_string),
            )
        }
        None => (None, None),
    };
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let (topology, db) = if kind == "sentinel" {
        let master = parts.next().ok_or(
            "a sentinel URL names the primary after the hosts: \
             redis+sentinel://host:26379/MASTER/db",
        )?;
        let db = parts.next().map(db_number).transpose()?.unwrap_or(0);
        (
            Topology::Sentinel {
                sentinels: hosts,
                master: master.to_string(),
            },
            db,
        )
    } else {
        // A cluster has database 0 only.
        match parts.next().map(db_number).transpose()? {
            None | Some(0) => {}
            Some(_) => return Err("a Redis Cluster has database 0 only".into()),
        }
        (Topology::Cluster { seeds: hosts }, 0)
    };
    if parts.next().is_some() {
        return Err("there is more after the database number".into());
    }
    Ok(Parsed {
        topology,
        tls,
        insecure,
        user,
        password,
        db,
    })
}

/// `host[:port]` or `[v6]:port`, with the port defaulted.
fn host_port(h: &str, default_port: u16) -> Result<Addr, String> {
    if h.is_empty() {
        return Err("an empty host in the host list".into());
    }
    let (host, port) = match h.rfind(':') {
        // A colon inside `[…]` belongs to an IPv6 address, not a port.
        Some(i) if !h[i..].contains(']') => (&h[..i], Some(&h[i + 1..])),
        _ => (h, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("host {h:?} has no name"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("host {h:?}: the port is not a number from 0 to 65535"))?,
        None => default_port,
    };
    Ok(Addr::Tcp {
        host: host.to_string(),
        port,
    })
}

fn db_number(p: &str) -> Result<i64, String> {
    p.parse()
        .map_err(|_| format!("the database must be a number, got {p:?}"))
}

/// TLS settings for `rediss…://` URLs; see
/// [`ReporterBuilder::tls`](crate::ReporterBuilder::tls).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) server_name: Option<String>,
    pub(crate) insecure: bool,
}

impl Tls {
    /// Verification on, against the system's roots, no client certificate.
    pub fn new() -> Self {
        Tls::default()
    }

    /// PEM file of the CA(s) that sign the servers' certificates, instead
    /// of the system's roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// PEM files of a client certificate (chain) and its private key, for
    /// servers with `tls-auth-clients yes`.
    pub fn client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((cert_file.into(), key_file.into()));
        self
    }

    /// The name the servers' certificates must be valid for. Default: the
    /// host each connection goes to (as written in the URL, or as a
    /// sentinel or a `MOVED` names it).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Turns certificate verification off (a warning is logged at
    /// `build()`). For tests only: anyone on the path can read and change
    /// the records. `rediss://…#insecure` does the same.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }
}

/// TLS ready to connect with: the files read, the verifier chosen.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: Option<String>,
}

impl TlsSetup {
    /// Reads the files `tls` names; errors name the file.
    pub fn new(tls: &Tls, insecure: bool) -> Result<TlsSetup, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let certs = |field: &str, path: &PathBuf| {
            CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read tls {field} {}: {e}", path.display()))
        };
        let builder = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &tls.ca_file {
                Some(path) => {
                    let found = certs("ca_file", path)?;
                    if found.is_empty() {
                        return Err(format!(
                            "tls ca_file {} holds no PEM certificate",
                            path.display()
                        ));
                    }
                    for cert in found {
                        roots.add(cert).map_err(|e| {
                            format!("tls ca_file {}: bad certificate: {e}", path.display())
                        })?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        // A system root rustls cannot use is skipped, as
                        // the redis crate does.
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match &tls.client_cert {
            Some((cert_file, key_file)) => {
                let chain = certs("client cert_file", cert_file)?;
                if chain.is_empty() {
                    return Err(format!(
                        "tls client cert_file {} holds no PEM certificate",
                        cert_file.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                    format!(
                        "cannot read tls client key_file {}: {e}",
                        key_file.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("tls client certificate or key refused: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsSetup {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: tls.server_name.clone(),
        })
    }
}

/// `insecure`: any certificate is taken; signatures are still checked, so
/// the handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Everything the workers need to connect.
pub(crate) struct Endpoint {
    pub topology: Topology,
    pub tls: Option<TlsSetup>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// The sentinels' own password (`requirepass` in sentinel.conf).
    pub sentinel_password: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Addr {
        Addr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn one_server_urls() {
        let p = parse("rediss://u:p%40ss@h:7000/3#insecure").unwrap();
        assert_eq!(p.topology, Topology::Single(tcp("h", 7000)));
        assert!(p.tls && p.insecure);
        assert_eq!(
            (p.user.as_deref(), p.password.as_deref(), p.db),
            (Some("u"), Some("p@ss"), 3)
        );
        let p = parse("redis://:pw@127.0.0.1:6380").unwrap();
        assert!(!p.tls);
        assert_eq!((p.user, p.password.as_deref()), (None, Some("pw")));
        let p = parse("redis+unix:///tmp/r.sock?db=2").unwrap();
        assert_eq!(
            p.topology,
            Topology::Single(Addr::Unix("/tmp/r.sock".into()))
        );
        assert_eq!(p.db, 2);
    }

    #[test]
    fn sentinel_urls_name_sentinels_a_primary_and_a_db() {
        let p = parse("rediss+sentinel://rep:s%3Acret@s1:26380,s2,[::1]:7/mymaster/4").unwrap();
        assert_eq!(
            p.topology,
            Topology::Sentinel {
                sentinels: vec![tcp("s1", 26380), tcp("s2", 26379), tcp("::1", 7)],
                master: "mymaster".into(),
            }
        );
        assert!(p.tls);
        assert_eq!(
            (p.user.as_deref(), p.password.as_deref(), p.db),
            (Some("rep"), Some("s:cret"), 4)
        );
        assert_eq!(tcp("::1", 7).to_string(), "[::1]:7");
    }

    #[test]
    fn cluster_urls_name_seeds() {
        let p = parse("redis+cluster://:pw@a:7000,b").unwrap();
        assert_eq!(
            p.topology,
            Topology::Cluster {
                seeds: vec![tcp("a", 7000), tcp("b", 6379)]
            }
        );
        assert_eq!((p.password.as_deref(), p.db), (Some("pw"), 0));
    }

    #[test]
    fn malformed_urls_are_refused_without_their_password() {
        for (url, needle) in [
            ("redis+sentinel://u:s3cret@s1:26379", "names the primary"),
            ("redis+sentinel://u:s3cret@s1/m/x", "must be a number"),
            ("redis+cluster://u:s3cret@a:7000/2", "database 0 only"),
            ("redis+cluster://u:s3cret@a:7000,,b", "empty host"),
            ("redis+sentinel://u:s3cret@a:port/m", "port is not a number"),
            ("redis://u:s3cret@a#insecure", "#insecure"),
            ("http://u:s3cret@a", "\"http\"://"),
            ("nothing", "must start with"),
        ] {
            let e = parse(url).expect_err(url);
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
    }
}
