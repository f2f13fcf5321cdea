//! Behind Sentinel: hears the sentinels announce a failover
//! (`+switch-master` on their Pub/Sub) and bumps a counter the workers
//! read before each batch, so they leave the old primary at once instead
//! of when it refuses them. After a forced failover the old primary keeps
//! taking writes as a primary until the sentinels convert it, some 10 s
//! later, and discards them then. One subscription per reporter, to one
//! sentinel at a time; missing an announcement only costs that delay.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::conn::{Conn, ConnError};
use crate::endpoint::{Addr, Endpoint, Topology};
use pumphouse_wire::resp::Reply;

/// Pause before the next sentinel after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Counts `+switch-master` announcements for the URL's primary until
/// `done` turns true; a no-op for other topologies.
pub(crate) async fn watch(
    endpoint: Arc<Endpoint>,
    switches: Arc<AtomicU64>,
    timeout: Duration,
    mut done: watch::Receiver<bool>,
) {
    let Topology::Sentinel { sentinels, master } = &endpoint.topology else {
        return;
    };
    let mut subscribed_before = false;
    for sentinel in sentinels.iter().cycle() {
        let listened = listen(
            &endpoint,
            sentinel,
            master,
            &switches,
            &mut subscribed_before,
            timeout,
        );
        tokio::select! {
            r = listened => {
                if let Err(e) = r {
                    tracing::debug!(sentinel = %sentinel, error = %e, "not subscribed to the sentinel's announcements; trying the next");
                }
            }
            _ = done.wait_for(|d| *d) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER) => {}
            _ = done.wait_for(|d| *d) => return,
        }
    }
}

/// Subscribes to `sentinel` and counts the announcements about `master`
/// until the connection fails.
async fn listen(
    endpoint: &Endpoint,
    sentinel: &Addr,
    master: &str,
    switches: &AtomicU64,
    subscribed_before: &mut bool,
    timeout: Duration,
) -> Result<(), ConnError> {
    let mut conn = Conn::subscribe(endpoint, sentinel, "+switch-master", timeout).await?;
    // One may have been missed while no sentinel was listened to.
    if *subscribed_before {
        switches.fetch_add(1, Relaxed);
    }
    *subscribed_before = true;
    loop {
        let Reply::Array(Some(items)) = conn.next_reply().await? else {
            continue;
        };
        // `message`, the channel, `<master> <old ip> <old port> <new ip>
        // <new port>`.
        if let [_, _, Reply::Bulk(Some(payload))] = items.as_slice() {
            let payload = String::from_utf8_lossy(payload);
            let mut words = payload.split(' ');
            if words.next() == Some(master) {
                switches.fetch_add(1, Relaxed);
                let new: Vec<&str> = words.skip(2).collect();
                tracing::info!(
                    primary = master,
                    to = new.join(":"),
                    "the sentinels announced a failover; analytics follow the new primary"
                );
            }
        }
    }
}
