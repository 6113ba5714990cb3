//! systemd integration (`Type=notify`): `READY=1` once migrations ran and the listener is bound, `STOPPING=1` when
//! shutdown begins, and watchdog pings only while the supervisor answers, so a wedged daemon is restarted by
//! systemd rather than left running. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use ractor::ActorRef;
use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::SupervisorMsg;

/// Tells systemd the daemon is ready.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd asks for, read as sd_watchdog_enabled(3) does: `WATCHDOG_USEC` set and non-zero,
/// and `WATCHDOG_PID` either unset or this process. (The sd-notify crate insists on `WATCHDOG_PID`.)
fn watchdog_interval(usec: Option<String>, pid: Option<String>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

fn send(states: &[NotifyState]) {
    // Keep NOTIFY_SOCKET: the watchdog needs it after READY.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "Could not notify systemd.");
    }
}

/// When systemd asks for watchdog pings (`WatchdogSec=`), pings at half its interval for as long as the
/// supervisor answers a status request within that half; stops at `shutdown`.
pub fn spawn_watchdog(supervisor: ActorRef<SupervisorMsg>, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let every = watchdog_interval(std::env::var("WATCHDOG_USEC").ok(), std::env::var("WATCHDOG_PID").ok())? / 2;
    tracing::info!(?every, "Sending systemd watchdog pings while the supervisor answers.");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let answered = matches!(
                supervisor.call(SupervisorMsg::Status, Some(every)).await,
                Ok(ractor::rpc::CallResult::Success(_))
            );
            if answered {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "The supervisor did not answer; withholding the watchdog ping so systemd restarts the daemon."
                );
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_read_as_systemd_documents_it() {
        let me = std::process::id().to_string();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(watchdog_interval(some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(
            watchdog_interval(some("30000000"), Some(me)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(some("30000000"), some("1")),
            None,
            "meant for another process"
        );
        assert_eq!(watchdog_interval(some("0"), None), None);
        assert_eq!(watchdog_interval(some("soon"), None), None);
        assert_eq!(watchdog_interval(None, None), None);
    }
}
