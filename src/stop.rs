//! Where a request to stop this replica (Redis's `SHUTDOWN`, at the port or the
//! prompt) is reported, and who acts on it.
//!
//! A front end only *reports* the request here; `main` alone waits for it
//! and stops the process the way it stops on SIGTERM (a leader hands
//! leadership over first), so no code below `main` ever exits the process.

/// Where stop requests are reported (who asked, as the value).
pub type StopRequests = crate::first_report::FirstReport;
