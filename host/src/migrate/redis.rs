//! The old tools' Redis settings as pumphouse's `redis_url` forms:
//! `redis[s]://[user:pass@]host:port/db`,
//! `redis[s]+sentinel://[user:pass@]h1:p1,h2:p2/MASTER/db` and
//! `redis[s]+cluster://[user:pass@]h1:p1,h2:p2`.

use super::input::OldRedis;
use super::Text;

/// `[source]` lines for Redis, already in TOML.
pub(super) struct RedisOut {
    /// The `redis_url` value (a template: may hold `${...}`).
    pub url: String,
    /// `source.sentinel_password` as a TOML value, for a Sentinel URL whose
    /// sentinels have a password of their own.
    pub sentinel_password: Option<String>,
    /// `[source.tls]` keys and TOML values.
    pub tls: Vec<(&'static str, String)>,
    /// Comments for the reader.
    pub notes: Vec<String>,
}

/// Percent-encodes a literal for the URL's user-info part; references are
/// left as they are (their values must then be URL-safe).
fn userinfo(t: &Text) -> String {
    match t {
        Text::Lit(s) => {
            let mut out = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            // `$` is encoded above, so no `${` can appear.
            out
        }
        Text::Env(_) => t.template(),
    }
}

pub(super) fn map(r: &OldRedis) -> RedisOut {
    let mut notes = Vec::new();
    let host = r.host.clone().filter(|h| !h.is_empty());
    let single = match (&host, &r.port) {
        // iam's docs give `host` as `127.0.0.1:6379` sometimes.
        (Some(Text::Lit(h)), None) if h.contains(':') => h.clone(),
        (Some(h), p) => format!(
            "{}:{}",
            h.template(),
            p.as_ref().map_or("6379".into(), Text::template)
        ),
        (None, p) => format!(
            "127.0.0.1:{}",
            p.as_ref().map_or("6379".into(), Text::template)
        ),
    };
    let addrs: Vec<String> = r.addrs.iter().map(Text::template).collect();
    let scheme = if r.use_ssl { "rediss" } else { "redis" };
    let auth = match (&r.username, &r.password) {
        (Some(u), Some(p)) if !u.is_empty() => format!("{}:{}@", userinfo(u), userinfo(p)),
        (_, Some(p)) if !p.is_empty() => format!(":{}@", userinfo(p)),
        (Some(u), _) if !u.is_empty() => format!("{}@", userinfo(u)),
        _ => String::new(),
    };
    let db = r.database.as_ref().map_or("0".to_string(), Text::template);
    let master = r.master_name.clone().filter(|m| !m.is_empty());
    let mut sentinel_password = None;
    let hosts = if addrs.is_empty() {
        single.clone()
    } else {
        addrs.join(",")
    };
    let url = if let Some(master) = master.filter(|_| !r.enable_cluster) {
        sentinel_password = r
            .sentinel_password
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(super::emit::string);
        format!(
            "{scheme}+sentinel://{auth}{hosts}/{}/{db}",
            userinfo(&master)
        )
    } else if r.enable_cluster || addrs.len() > 1 {
        if !r.enable_cluster {
            notes.push(
                "several addrs without enable_cluster: go-redis treats them as a cluster, so does this URL"
                    .into(),
            );
        }
        if db != "0" {
            notes.push(format!(
                "database {db} is dropped: a Redis Cluster has only database 0"
            ));
        }
        format!("{scheme}+cluster://{auth}{hosts}")
    } else {
        format!("{scheme}://{auth}{hosts}/{db}")
    };
    let mut tls = Vec::new();
    let file = |t: &Option<Text>| {
        t.as_ref()
            .filter(|t| !t.is_empty())
            .map(super::emit::string)
    };
    for (key, value) in [
        ("ca_file", file(&r.ca_file)),
        ("cert_file", file(&r.cert_file)),
        ("key_file", file(&r.key_file)),
    ] {
        if let Some(v) = value {
            if r.use_ssl {
                tls.push((key, v));
            } else {
                notes.push(format!("ssl {key} ignored: use_ssl is off"));
            }
        }
    }
    if r.insecure && r.use_ssl {
        tls.push(("insecure", "true".into()));
    }
    RedisOut {
        url,
        sentinel_password,
        tls,
        notes,
    }
}
