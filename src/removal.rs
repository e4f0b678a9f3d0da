//! How a replica learns that it is no longer a member, and who decides what
//! follows.
//!
//! It can learn it in several places: its own log applies a membership
//! without it; the leader tells it (`PeerRequest::Removed`); or, after being
//! removed while it was down, a peer answers its vote request with why. Each
//! place only *reports* it here. `main` alone waits for the first report and
//! stops the process, so the transport and the Raft node never exit it.

use tokio::sync::watch;

/// Where removals are reported. Cheap to clone.
#[derive(Clone)]
pub struct Removal(watch::Sender<Option<String>>);

impl Removal {
    pub fn new() -> Removal {
        Removal(watch::Sender::new(None))
    }

    /// Says this replica was removed, and why (for the person reading).
    /// Only the first report counts.
    pub fn report(&self, why: impl Into<String>) {
        let why = why.into();
        self.0.send_if_modified(|reported| {
            if reported.is_some() {
                return false;
            }
            *reported = Some(why);
            true
        });
    }

    /// Waits for the first report and returns its reason.
    pub async fn reported(&self) -> String {
        let mut reports = self.0.subscribe();
        loop {
            if let Some(why) = reports.borrow_and_update().clone() {
                return why;
            }
            if reports.changed().await.is_err() {
                // Cannot happen while `self` holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for Removal {
    fn default() -> Self {
        Removal::new()
    }
}
