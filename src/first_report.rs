//! A report that only `main` acts on, of which the first one counts: that
//! this replica was removed (`removal.rs`), or that a client asked it to stop
//! (`stop.rs`). Code anywhere may report; `main` waits for the first report
//! and stops the process, so nothing below `main` ever exits it.

use tokio::sync::watch;

/// Where the reports go. Cheap to clone.
#[derive(Clone)]
pub struct FirstReport(watch::Sender<Option<String>>);

impl FirstReport {
    pub fn new() -> FirstReport {
        FirstReport(watch::Sender::new(None))
    }

    /// Reports, saying why or who asked (for the person reading the log).
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

    /// Waits for the first report and returns what it said.
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

impl Default for FirstReport {
    fn default() -> Self {
        FirstReport::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_report_is_the_one_returned() {
        let stop = FirstReport::new();
        stop.report("SHUTDOWN from client 1");
        stop.report("SHUTDOWN from the prompt");
        assert_eq!(stop.reported().await, "SHUTDOWN from client 1");
    }

    #[tokio::test]
    async fn a_waiter_hears_a_report_made_after_it_began_waiting() {
        let removal = FirstReport::new();
        let waiting = tokio::spawn({
            let removal = removal.clone();
            async move { removal.reported().await }
        });
        tokio::task::yield_now().await;
        removal.report("its log holds a membership without it");
        assert_eq!(
            waiting.await.expect("the waiter ends"),
            "its log holds a membership without it"
        );
    }
}
