//! What a `redis_url` names, parsed without I/O: one server, a primary
//! found through Redis Sentinel, or the seed nodes of a Redis Cluster.
//! [`super::conn`] turns the result into clients.
//!
//! The multi-host forms are not URLs the redis crate reads, so each host is
//! handed to it as a one-server URL ([`Nodes::url`]): the crate keeps doing
//! the percent-decoding of user and password and the TLS address.

/// Port of a sentinel written without one.
pub const SENTINEL_PORT: u16 = 26379;
/// Port of a cluster node written without one.
pub const REDIS_PORT: u16 = 6379;

/// The shape of the deployment a `redis_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `redis://…` or `rediss://…`: one server, parsed by the redis crate.
    Single,
    /// `redis+sentinel://[user:password@]h1:p1,h2:p2/MASTER[/db]`: the
    /// hosts are sentinels watching the primary named `master`; the
    /// credentials are the primary's (the sentinels' own password is
    /// `source.sentinel_password`).
    Sentinel {
        nodes: Nodes,
        master: String,
        db: i64,
    },
    /// `redis+cluster://[user:password@]h1:p1,h2:p2[/0]`: seed nodes of a
    /// Redis Cluster (the others are discovered); the credentials are every
    /// node's. A cluster has only database 0.
    Cluster { nodes: Nodes },
}

/// The hosts of a multi-host URL and what each connection shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// `rediss+…`: TLS to every host.
    pub tls: bool,
    /// `user:password` as written (still percent-encoded), if any.
    userinfo: Option<String>,
    /// `host:port` each, in the order written.
    pub hosts: Vec<String>,
}

impl Nodes {
    /// A one-server URL for `host`, with this URL's credentials when
    /// `with_auth`, for the redis crate to parse.
    pub fn url(&self, host: &str, with_auth: bool, db: i64) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match (&self.userinfo, with_auth) {
            (Some(auth), true) => format!("{scheme}://{auth}@{host}/{db}"),
            _ => format!("{scheme}://{host}/{db}"),
        }
    }

    /// The credentials alone, as a one-server URL to a placeholder host:
    /// the redis crate decodes them from it.
    pub fn auth_url(&self) -> String {
        self.url("localhost", true, 0)
    }
}

/// Reads the form of `url`. Errors never quote the credentials.
pub fn parse(url: &str) -> Result<Topology, String> {
    const FORMS: &str = "redis://, rediss://, redis[s]+sentinel:// or redis[s]+cluster://";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("must start with {FORMS}"));
    };
    let (tls, cluster) = match scheme {
        "redis" | "rediss" => return Ok(Topology::Single),
        "redis+sentinel" => (false, false),
        "rediss+sentinel" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => return Err(format!("must start with {FORMS}, got {other:?}://…")),
    };
    // Credentials end at the last `@` (one inside a password must be
    // written %40); the host list ends at the first `/` after them.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (host_list, path) = after.split_once('/').unwrap_or((after, ""));
    let default_port = if cluster { REDIS_PORT } else { SENTINEL_PORT };
    let hosts = host_list
        .split(',')
        .map(|h| host_port(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let nodes = Nodes {
        tls,
        userinfo: userinfo.filter(|u| !u.is_empty()).map(str::to_string),
        hosts,
    };
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    if cluster {
        return match (parts.next().map(db_number).transpose()?, parts.next()) {
            (None | Some(0), None) => Ok(Topology::Cluster { nodes }),
            (Some(db), None) => Err(format!(
                "a Redis Cluster has only database 0, the URL names {db}"
            )),
            (_, Some(_)) => Err("a cluster URL ends with the host list (or /0)".into()),
        };
    }
    let master = parts.next().ok_or(
        "a sentinel URL names the primary after the hosts: \
         redis+sentinel://host:26379/MASTER/db",
    )?;
    let db = parts.next().map(db_number).transpose()?.unwrap_or(0);
    if parts.next().is_some() {
        return Err("a sentinel URL ends with /MASTER/db; there is more after the db".into());
    }
    Ok(Topology::Sentinel {
        nodes,
        master: master.to_string(),
        db,
    })
}

/// `host[:port]` or `[v6]:port`, with the port defaulted.
fn host_port(h: &str, default_port: u16) -> Result<String, String> {
    if h.is_empty() {
        return Err("an empty host in the host list".into());
    }
    let (host, port) = match h.rfind(':') {
        // A colon inside `[…]` belongs to an IPv6 address, not a port.
        Some(i) if !h[i..].contains(']') => (&h[..i], Some(&h[i + 1..])),
        _ => (h, None),
    };
    if host.is_empty() {
        return Err(format!("host {h:?} has no name"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("host {h:?}: the port is not a number from 0 to 65535"))?,
        None => default_port,
    };
    Ok(format!("{host}:{port}"))
}

fn db_number(p: &str) -> Result<i64, String> {
    p.parse()
        .map_err(|_| format!("the database must be a number, got {p:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(tls: bool, userinfo: Option<&str>, hosts: &[&str]) -> Nodes {
        Nodes {
            tls,
            userinfo: userinfo.map(str::to_string),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn one_server_urls_are_left_to_the_redis_crate() {
        assert_eq!(parse("redis://h:1/0"), Ok(Topology::Single));
        assert_eq!(parse("rediss://u:p@h:1/2"), Ok(Topology::Single));
    }

    #[test]
    fn a_sentinel_url_names_sentinels_a_primary_and_a_db() {
        assert_eq!(
            parse("redis+sentinel://u:p%40ss@s1:26380,s2,[::1]:7/mymaster/3"),
            Ok(Topology::Sentinel {
                nodes: nodes(
                    false,
                    Some("u:p%40ss"),
                    &["s1:26380", "s2:26379", "[::1]:7"]
                ),
                master: "mymaster".into(),
                db: 3,
            })
        );
        let Ok(Topology::Sentinel { nodes: n, db, .. }) = parse("rediss+sentinel://s1/m") else {
            panic!("not a sentinel URL");
        };
        assert!(n.tls);
        assert_eq!(db, 0);
        assert_eq!(n.url("s1:26379", true, 0), "rediss://s1:26379/0");
    }

    #[test]
    fn credentials_go_to_the_primary_only() {
        let Ok(Topology::Sentinel { nodes: n, .. }) = parse("redis+sentinel://:pw@a:7000/m") else {
            panic!("not a sentinel URL");
        };
        assert_eq!(n, nodes(false, Some(":pw"), &["a:7000"]));
        assert_eq!(n.url("a:7000", true, 2), "redis://:pw@a:7000/2");
        assert_eq!(n.url("a:7000", false, 0), "redis://a:7000/0");
    }

    #[test]
    fn a_cluster_url_names_seed_nodes() {
        assert_eq!(
            parse("redis+cluster://u:p@n1:7000,n2,[::1]:7002"),
            Ok(Topology::Cluster {
                nodes: nodes(false, Some("u:p"), &["n1:7000", "n2:6379", "[::1]:7002"]),
            })
        );
        // `pumphouse migrate` writes no path; `/0` is accepted too.
        let Ok(Topology::Cluster { nodes: n }) = parse("rediss+cluster://n1:7000/0") else {
            panic!("not a cluster URL");
        };
        assert!(n.tls);
        assert_eq!(n.url("n1:7000", true, 0), "rediss://n1:7000/0");
    }

    #[test]
    fn malformed_urls_are_refused_without_their_password() {
        for (url, needle) in [
            ("redis+sentinel://u:s3cret@s1:26379", "names the primary"),
            ("redis+sentinel://u:s3cret@s1/m/x", "must be a number"),
            ("redis+cluster://u:s3cret@a:7000/2", "only database 0"),
            (
                "redis+cluster://u:s3cret@a:7000/0/x",
                "ends with the host list",
            ),
            ("rediss+cluster://u:s3cret@a:7000,:7001", "has no name"),
            ("redis+sentinel://u:s3cret@a:7000,,b/m", "empty host"),
            ("redis+sentinel://u:s3cret@a:port/m", "port is not a number"),
            ("http://u:s3cret@a", "\"http\"://"),
            ("nothing", "must start with"),
        ] {
            let e = parse(url).expect_err(url);
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
    }
}
