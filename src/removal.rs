//! How a replica learns that it is no longer a member, and who decides what
//! follows.
//!
//! It can learn it in several places: its own log applies a membership
//! without it; the leader tells it (`PeerRequest::Removed`); or, after being
//! removed while it was down, a peer answers its vote request with why. Each
//! place only *reports* it here. `main` alone waits for the first report and
//! stops the process, so the transport and the Raft node never exit it.

/// Where removals are reported (the reason as the value).
pub type Removal = crate::first_report::FirstReport;
