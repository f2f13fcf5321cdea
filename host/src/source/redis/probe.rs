//! `pumphouse check`'s look at a source's Redis: can pumphouse connect,
//! log in and run what it needs on its keys? Every probe is read-only or
//! a no-op, so checking a live deployment changes nothing; only an ACL
//! refusal (`NOPERM`, `NOAUTH`) or a connection failure counts as a
//! problem, since the probes are expected to fail otherwise (`NOSCRIPT`,
//! `NOGROUP`).

use std::time::Duration;

use super::conn::{cause, Conn, ConnError, Endpoint};
use super::lease_key;
use crate::config::{Delivery, SourceConfig, SourceKind};

/// A script hash no Redis has: `EVALSHA` of it answers `NOSCRIPT` once
/// the ACL has allowed the command and its keys.
const NO_SUCH_SCRIPT: &str = "0000000000000000000000000000000000000000";

/// What stops pumphouse from using a source's Redis.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("no answer from redis at {url} within {within:?}")]
    Timeout { url: String, within: Duration },
    /// Redis refused a command pumphouse runs.
    #[error("redis at {url} refused {what}: {cause}")]
    Refused {
        url: String,
        what: String,
        cause: String,
    },
}

/// A bound on connecting, past the endpoint's own: each of its steps has a
/// timeout, and a cluster whose seeds do not answer is asked seed by seed
/// why (some seconds), so that the error names each seed's cause rather
/// than this timeout's.
const CONNECT_WITHIN: Duration = Duration::from_secs(15);

/// Connects (within [`CONNECT_WITHIN`]) and runs each command pumphouse
/// needs on the source's keys in a form that changes nothing, within
/// `within`.
pub async fn probe(cfg: &SourceConfig, within: Duration) -> Result<(), ProbeError> {
    let endpoint = Endpoint::for_source(cfg)?;
    let url = endpoint.redacted().to_string();
    let connect_within = CONNECT_WITHIN.max(within);
    let mut conn = match tokio::time::timeout(connect_within, endpoint.manager()).await {
        Ok(conn) => conn?,
        Err(_) => {
            return Err(ProbeError::Timeout {
                url,
                within: connect_within,
            })
        }
    };
    match tokio::time::timeout(within, run(&mut conn, &url, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout { url, within }),
    }
}

async fn run(conn: &mut Conn, url: &str, cfg: &SourceConfig) -> Result<(), ProbeError> {
    let mut probes: Vec<(String, redis::Cmd)> = vec![("PING".into(), redis::cmd("PING"))];
    for key in cfg.keys() {
        match &cfg.kind {
            SourceKind::List => {
                probes.push((format!("LLEN {key}"), cmd(&["LLEN", &key])));
                if cfg.delivery == Delivery::AtLeastOnce {
                    // The Lua claim's command and keys (the SORT claim is an
                    // optimisation pumphouse drops when refused).
                    let leases = lease_key(&key);
                    let batch = format!("{{{}}}:pumphouse:batch:check:0", super::hash_tag(&key));
                    probes.push((
                        format!("EVALSHA on {key}, {leases}, {batch}"),
                        cmd(&["EVALSHA", NO_SUCH_SCRIPT, "3", &key, &leases, &batch]),
                    ));
                } else {
                    // A count of 0 pops nothing.
                    probes.push((format!("LPOP {key}"), cmd(&["LPOP", &key, "0"])));
                }
            }
            SourceKind::Stream(o) => {
                probes.push((format!("XLEN {key}"), cmd(&["XLEN", &key])));
                probes.push((
                    format!("XPENDING {key} {}", o.group),
                    cmd(&["XPENDING", &key, &o.group]),
                ));
            }
        }
    }
    let dead = cfg.dead_letter_key();
    probes.push((format!("EXISTS {dead}"), cmd(&["EXISTS", &dead])));
    for (what, c) in probes {
        check(conn, url, &what, c).await?;
    }
    Ok(())
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

async fn check(conn: &mut Conn, url: &str, what: &str, c: redis::Cmd) -> Result<(), ProbeError> {
    match c.query_async::<redis::Value>(conn).await {
        Ok(_) => Ok(()),
        // Other server errors (NOSCRIPT, NOGROUP, WRONGTYPE) are the
        // expected answers of probes that Redis ran.
        Err(e) if !is_refusal(&e) && e.code().is_some() => Ok(()),
        Err(e) => Err(ProbeError::Refused {
            url: url.to_string(),
            what: what.to_string(),
            cause: cause(&e),
        }),
    }
}

/// An ACL or login refusal.
fn is_refusal(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOPERM" | "NOAUTH" | "WRONGPASS"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
}
