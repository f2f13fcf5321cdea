//! systemd's readiness protocol (`Type=notify`): READY=1 once every pump
//! has started, RELOADING=1 … READY=1 around a reload, STOPPING=1 on
//! shutdown. Without `NOTIFY_SOCKET` (not started by systemd) every call
//! does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // A lost notification must not stop the daemon: systemd then times the
    // start out and says so itself.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Every pump has started and the pipeline runs.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins; `ready` ends it. systemd wants the monotonic time with
/// RELOADING=1 (`Type=notify-reload`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The daemon drains in-flight batches and exits.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}
