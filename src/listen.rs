//! Opening a front end's port before the replica starts, so that a port that
//! is taken is reported at once, in one line that says which flag moves it.

use tokio::net::TcpListener;

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {serving} on {addr}: {why} ({advice})")]
pub struct ListenError {
    serving: &'static str,
    addr: String,
    why: String,
    advice: &'static str,
}

/// Binds `addr` for `serving` ("clients", "HTTP"); `advice` is what a person
/// can do when it is taken.
pub async fn bind(
    addr: &str,
    serving: &'static str,
    advice: &'static str,
) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|e| ListenError {
        serving,
        addr: addr.to_string(),
        why: e.to_string(),
        advice,
    })
}
