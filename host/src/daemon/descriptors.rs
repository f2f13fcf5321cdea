//! The host's file descriptors. The soft `RLIMIT_NOFILE` is raised to the
//! hard limit at start (the usual soft limit of 1024 is a default for
//! interactive shells, not a choice), and the pumps' per-instance caps
//! (`sandbox.max_open_files`, `max_connections`) should leave
//! [`HOST_RESERVE`] of it to the host (a warning says when they do not),
//! so that `/healthz`, Redis, the spool and a reload still get
//! descriptors while every plugin hoards.

use crate::config::Config;

/// Descriptors kept for the host beyond what plugins may hold: its Redis
/// connections, the HTTP server's clients, spool files, and the config
/// and plugin files a reload reads.
pub const HOST_RESERVE: u64 = 1024;

/// Raises the soft limit on open files to the hard limit; returns the
/// limit now in force (`None` where it cannot be read).
// `rlim_t` is u64 on Linux but not on every unix.
#[allow(clippy::unnecessary_cast)]
pub fn raise_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
            return None;
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
        Some(rl.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// The most descriptors `config`'s plugin instances may hold together:
/// each instance (the sink and every filter) its open files, connections
/// and preopened dirs.
pub fn plugin_share(config: &Config) -> u64 {
    config
        .pumps
        .iter()
        .map(|p| {
            let s = &p.sandbox;
            let per_instance =
                u64::from(s.max_open_files) + u64::from(s.max_connections) + s.dirs.len() as u64;
            per_instance * (1 + p.filters_chain.len() as u64)
        })
        .sum()
}

/// Warns when `config`'s plugins could take descriptors the host needs.
/// A warning, not a refusal: the share is the worst case of every
/// instance hoarding to its caps at once, and under a hard limit of 1024
/// (common in containers) refusing would reject even a one-pump config
/// with the default caps.
pub fn check(config: &Config, limit: Option<u64>) {
    let Some(limit) = limit else { return };
    let share = plugin_share(config);
    if share + HOST_RESERVE > limit {
        tracing::warn!(
            limit,
            plugins = share,
            reserve = HOST_RESERVE,
            "the pumps' sandbox.max_open_files and max_connections let plugins hold {share} descriptors, leaving less than {HOST_RESERVE} of the limit of {limit} to the host; lower them or raise the hard RLIMIT_NOFILE"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_every_instance_of_every_pump() {
        let config = Config::from_str_at(
            r#"
            [source]
            format = "iam"
            [[pumps]]
            name = "a"
            plugin = "file"
            sandbox = { max_open_files = 10, max_connections = 5 }
            filters_chain = [{ plugin = "match" }]
            [[pumps]]
            name = "b"
            plugin = "file"
            "#,
            std::path::Path::new("test.toml"),
            std::path::Path::new("/etc/ph"),
        )
        .unwrap();
        let defaults = u64::from(crate::config::DEFAULT_MAX_OPEN_FILES)
            + u64::from(crate::config::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(plugin_share(&config), 2 * 15 + defaults);
    }

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_limit().expect("a limit on unix");
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_limit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert_eq!(limit, rl.rlim_max as u64);
        assert_eq!(rl.rlim_cur, rl.rlim_max);
    }
}
