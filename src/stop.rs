//! Where a request to stop this replica (Redis's `SHUTDOWN`, at the port or the
//! prompt) is reported, and who acts on it.
//!
//! A front end only *reports* the request here; `main` alone waits for it
//! and stops the process the way it stops on SIGTERM (a leader hands
//! leadership over first), so no code below `main` ever exits the process.

use tokio::sync::watch;

/// Where stop requests are reported. Cheap to clone.
#[derive(Clone)]
pub struct StopRequests(watch::Sender<Option<String>>);

impl StopRequests {
    pub fn new() -> StopRequests {
        StopRequests(watch::Sender::new(None))
    }

    /// Asks `main` to stop this replica, saying who asked (for the log).
    /// Only the first request counts.
    pub fn request(&self, who: impl Into<String>) {
        let who = who.into();
        self.0.send_if_modified(|requested| {
            if requested.is_some() {
                return false;
            }
            *requested = Some(who);
            true
        });
    }

    /// Waits for the first request and returns who made it.
    pub async fn requested(&self) -> String {
        let mut requests = self.0.subscribe();
        loop {
            if let Some(who) = requests.borrow_and_update().clone() {
                return who;
            }
            if requests.changed().await.is_err() {
                // Cannot happen while `self` holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for StopRequests {
    fn default() -> Self {
        StopRequests::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_is_the_one_reported() {
        let stop = StopRequests::new();
        stop.request("SHUTDOWN from client 1");
        stop.request("SHUTDOWN from the prompt");
        assert_eq!(stop.requested().await, "SHUTDOWN from client 1");
    }
}
