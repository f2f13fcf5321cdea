//! `pumphouse dlq list|replay|purge` as the command line prints them.

use super::{record_bytes, Dlq, DlqError, Selector};
use crate::config::Config;

/// What to do with the selected entries.
pub enum Action {
    /// Print them, as a table or (`json`) as their stored documents.
    List { json: bool },
    /// Push their records back into their source keys (or `to`).
    Replay { to: Option<String> },
    /// Delete them; without `yes`, only say how many would go.
    Purge { yes: bool },
}

/// Runs a `dlq` command against `config`'s dead-letter key (or `key`);
/// false when it refused to act (a purge without `--yes`).
pub async fn run(
    config: &Config,
    key: Option<String>,
    sel: &Selector,
    action: Action,
) -> Result<bool, DlqError> {
    let mut dlq = Dlq::connect(&config.source, key).await?;
    match action {
        Action::List { json } => {
            let entries = dlq.list(sel).await?;
            let total = dlq.total().await?;
            for (i, s) in entries.iter().enumerate() {
                match (&s.entry, json) {
                    (_, true) => println!("{}", String::from_utf8_lossy(&s.raw)),
                    (Some(e), false) => {
                        let bytes = record_bytes(e).map_or(0, |b| b.len());
                        println!(
                            "{i:>5}  {}  pump={}  source={}  {bytes}B {}  {}",
                            e.time,
                            e.pump.as_deref().unwrap_or("source"),
                            e.source,
                            e.encoding,
                            e.reason
                        );
                    }
                    (None, false) => {
                        println!("{i:>5}  (not a dead-letter entry: {} bytes)", s.raw.len())
                    }
                }
            }
            if !json {
                eprintln!("{} of {total} entries in {}", entries.len(), dlq.key());
            }
        }
        Action::Replay { to } => {
            let r = dlq.replay(sel, to.as_deref()).await?;
            println!(
                "replayed {} records from {}; {} entries held no record and were left in place",
                r.replayed,
                dlq.key(),
                r.skipped
            );
        }
        Action::Purge { yes: false } => {
            let n = dlq.list(sel).await?.len();
            eprintln!(
                "would delete {n} entries from {}; add --yes to do it",
                dlq.key()
            );
            return Ok(false);
        }
        Action::Purge { yes: true } => {
            let n = dlq.purge(sel).await?;
            println!("deleted {n} entries from {}", dlq.key());
        }
    }
    Ok(true)
}
