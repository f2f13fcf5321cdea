//! Hears the sentinels announce a failover (`+switch-master` on their
//! Pub/Sub), so that connections behind Sentinel follow the new primary at
//! once. Without it a connection learns of a failover only when the old
//! primary refuses it or drops it, and after a forced failover
//! (`SENTINEL FAILOVER`) the old primary keeps answering as a writable
//! primary until the sentinels convert it to a replica, some 10 s later:
//! records pushed to the new primary meanwhile wait, unread.
//!
//! One watch per [`super::conn::Endpoint`] behind Sentinel, on one sentinel
//! at a time (the next one in the list when it is lost). Missing an
//! announcement only costs that delay: the error signs still apply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

/// Bound of connecting and subscribing to one sentinel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the next sentinel after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often a quiet subscription is checked with `PING` (and the watch
/// checks whether anyone still listens).
const PING_EVERY: Duration = Duration::from_secs(5);

/// The failovers the sentinels announced for one primary.
pub(super) struct Announcements {
    /// Announcements heard, plus one per re-subscription (one may have
    /// been missed while no sentinel was subscribed to).
    count: AtomicU64,
    started: AtomicBool,
    /// One client per sentinel, with the sentinels' password and TLS.
    sentinels: Vec<redis::Client>,
    master: String,
    /// For logs.
    redacted: String,
}

impl Announcements {
    pub fn new(sentinels: Vec<redis::Client>, master: String, redacted: String) -> Self {
        Announcements {
            count: AtomicU64::new(0),
            started: AtomicBool::new(false),
            sentinels,
            master,
            redacted,
        }
    }

    /// Announcements so far; a connection made when this was lower should
    /// ask the sentinels again before its next command.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Starts the watch, once, on the current Tokio runtime. It ends
    /// when the last holder of `self` is gone.
    pub fn start(self: &Arc<Self>) {
        if !self.sentinels.is_empty() && !self.started.swap(true, Relaxed) {
            tokio::spawn(watch(Arc::downgrade(self)));
        }
    }
}

async fn watch(this: Weak<Announcements>) {
    let mut next = 0;
    let mut subscribed_before = false;
    loop {
        let Some(a) = this.upgrade() else { return };
        let client = a.sentinels[next % a.sentinels.len()].clone();
        next += 1;
        drop(a);
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                if subscribed_before {
                    if let Some(a) = this.upgrade() {
                        a.count.fetch_add(1, Relaxed);
                    }
                }
                subscribed_before = true;
                listen(&this, pubsub).await;
            }
            Ok(Err(e)) => {
                if let Some(a) = this.upgrade() {
                    tracing::debug!(
                        "redis at {}: cannot subscribe to a sentinel's failover announcements \
                         ({}); trying the next",
                        a.redacted,
                        super::conn::cause(&e)
                    );
                }
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Counts the announcements about our primary until the subscription is
/// lost or nobody holds the watch any more.
async fn listen(this: &Weak<Announcements>, pubsub: redis::aio::PubSub) {
    let (mut sink, mut messages) = pubsub.split();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return };
                let Some(a) = this.upgrade() else { return };
                // `<master> <old ip> <old port> <new ip> <new port>`
                let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                let mut words = payload.split(' ');
                if words.next() == Some(a.master.as_str()) {
                    a.count.fetch_add(1, Relaxed);
                    let new: Vec<&str> = words.skip(2).collect();
                    tracing::info!(
                        "redis at {}: the sentinels announced a failover to {}",
                        a.redacted,
                        new.join(":")
                    );
                }
            }
            _ = tokio::time::sleep(PING_EVERY) => {
                if this.strong_count() == 0 {
                    return;
                }
                let alive = tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
