//! The HTTP port, for monitoring: `/metrics` (Prometheus, OpenMetrics text),
//! `/health` and `/ready`.
//!
//! - `/health`: 200 whenever the process answers at all (a liveness probe).
//! - `/ready`: 200 once this replica knows a leader and has applied at least
//!   what was committed when it started (a readiness probe: it can serve
//!   reads without a long wait); else 503 with the reason on one line.
//! - `/metrics`: the page `metrics.rs` encodes, after copying openraft's view
//!   of this replica into its gauges.
//!
//! It serves from before the replica has started (a restart may take a while
//! to open its disk and find its cluster): `/ready` then says "starting".
//! HTTP/1 only, GET and HEAD only, and at most [`MAX_CONNECTIONS`] at once.
//! hyper answers a request it cannot read with 400 and closes the connection.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::kv::{Kv, Role, Status};
use crate::metrics::{self, RaftView};

/// Connections served at once; more are closed at once. A scraper and a
/// probe or two need a handful.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's head may hold.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Opens the HTTP port, before the replica starts, so a taken port is
/// reported at once.
pub async fn bind(addr: &str) -> Result<TcpListener, crate::listen::ListenError> {
    crate::listen::bind(
        addr,
        "HTTP",
        "is another replica or program using it? choose another with --http-addr, \
         or turn it off with --no-http",
    )
    .await
}

/// What the pages are made from: the replica once it has started, and how
/// far it has come towards ready.
#[derive(Default)]
pub struct Pages {
    kv: OnceLock<Kv>,
    readiness: Readiness,
}

/// The part of `/ready` that, once true, stays true: this replica has applied
/// what was committed when it started.
struct Readiness {
    /// The index to reach; [`NOT_YET`] until a leader is known.
    target: AtomicU64,
    caught_up: AtomicBool,
}

const NOT_YET: u64 = u64::MAX;

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            target: AtomicU64::new(NOT_YET),
            caught_up: AtomicBool::new(false),
        }
    }
}

impl Pages {
    pub fn new() -> Arc<Pages> {
        Arc::default()
    }

    /// The replica has started: serve its figures, and follow it until it
    /// has caught up with what was committed when it started.
    ///
    /// "Committed when it started" is the larger of what this replica's own
    /// disk said (what it had applied) and what the leader says is committed when
    /// this replica first hears of one: a replica that restarts behind the
    /// others is not ready until it has applied what they had.
    pub async fn started(self: Arc<Self>, kv: Kv) {
        let mut watch = kv.raft_metrics();
        let _ = self.kv.set(kv);
        let committed_here = index_of(watch.borrow_watched().local_committed);
        loop {
            {
                let m = watch.borrow_watched();
                let mut target = self.readiness.target.load(Relaxed);
                if target == NOT_YET && m.current_leader.is_some() {
                    target = committed_here.max(index_of(m.cluster_committed));
                    self.readiness.target.store(target, Relaxed);
                }
                if target != NOT_YET && index_of(m.last_applied) >= target {
                    self.readiness.caught_up.store(true, Relaxed);
                    tracing::info!("ready: a leader is known and index {target} is applied");
                    return;
                }
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    }

    /// `Ok` if ready, else the reason.
    fn ready(&self) -> Result<(), String> {
        let Some(kv) = self.kv.get() else {
            return Err("starting: opening the data folder and finding the cluster".into());
        };
        let m = kv.raft_metrics().borrow_watched().clone();
        if let Err(fatal) = &m.running_state {
            return Err(format!("stopped: {fatal}"));
        }
        // It answers no reads until it is upgraded.
        if let Some(held) = kv.state().versions.held_back() {
            return Err(format!("held back: {held}"));
        }
        readiness(
            m.current_leader,
            index_of(m.last_applied),
            self.readiness.target.load(Relaxed),
            self.readiness.caught_up.load(Relaxed),
        )
    }
}

/// The rule of `/ready`, given what is known.
fn readiness(
    leader: Option<u64>,
    applied: u64,
    target: u64,
    caught_up: bool,
) -> Result<(), String> {
    if leader.is_none() {
        return Err(
            "no leader known (is a majority of the replicas running and connected?)".into(),
        );
    }
    if !caught_up {
        return Err(if target == NOT_YET {
            "catching up: waiting for the commit index".into()
        } else {
            format!("catching up: applied {applied} of {target}, committed when it started")
        });
    }
    Ok(())
}

fn index_of(log_id: Option<crate::types::LogId>) -> u64 {
    log_id.map_or(0, |id| id.index)
}

/// Serves the HTTP port until the process ends.
pub async fn serve(listener: TcpListener, pages: Arc<Pages>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file handles, most likely: wait for some to close.
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("HTTP connection from {peer} closed: {MAX_CONNECTIONS} already open");
            continue;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&pages, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("HTTP connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

/// One request's response.
fn answer<B>(pages: &Pages, request: &Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/health" | "/ready") {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found: {path}; this port serves /metrics, /health and /ready\n"),
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/health" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => match pages.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => {
            if let Some(kv) = pages.kv.get() {
                metrics::observe_raft(&raft_view(kv.replica_id(), &kv.status()));
            }
            let mut response = Response::new(Full::new(Bytes::from(metrics::encode())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What `status` shows, as the gauges want it: at the leader, each other
/// member's lag behind its last log index (members that have not answered
/// yet are left out rather than shown as far behind).
fn raft_view(my_id: u64, status: &Status) -> RaftView {
    let lag = if status.role == Role::Leader {
        status
            .members
            .iter()
            .filter(|member| member.id != my_id)
            .filter_map(|member| {
                let matched = member.matched?;
                Some((member.id, status.last_log_index.saturating_sub(matched)))
            })
            .collect()
    } else {
        Vec::new()
    };
    RaftView {
        role: status.role.as_str(),
        term: status.term,
        leader: status.leader,
        commit_index: status.committed,
        applied_index: status.applied,
        last_log_index: status.last_log_index,
        lag,
        machine_version: status.machine_version,
        machine_version_max: status.machine_version_max,
        held_back: status.held_back_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_leader_and_the_start_commit_applied() {
        assert!(readiness(None, 10, 5, true)
            .unwrap_err()
            .starts_with("no leader known"));
        assert_eq!(
            readiness(Some(1), 3, NOT_YET, false).unwrap_err(),
            "catching up: waiting for the commit index"
        );
        assert_eq!(
            readiness(Some(1), 3, 7, false).unwrap_err(),
            "catching up: applied 3 of 7, committed when it started"
        );
        assert_eq!(readiness(Some(2), 7, 7, true), Ok(()));
    }

    #[test]
    fn paths_and_methods() {
        let pages = Pages::default();
        let get = |path: &str| {
            let request = Request::get(path).body(()).unwrap();
            answer(&pages, &request).status()
        };
        assert_eq!(get("/health"), StatusCode::OK);
        assert_eq!(get("/health?verbose=1"), StatusCode::OK);
        assert_eq!(get("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/"), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics/x"), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).unwrap();
        let response = answer(&pages, &post);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn lag_is_shown_at_the_leader_only_for_members_that_answered() {
        use crate::kv::MemberStatus;
        let member = |id, matched| MemberStatus {
            id,
            voter: true,
            addr: format!("h:{id}"),
            matched,
        };
        let status = Status {
            last_log_index: 50,
            committed: 48,
            applied: 47,
            members: vec![member(1, Some(50)), member(2, Some(45)), member(3, None)],
            ..Status::example()
        };
        let view = raft_view(1, &status);
        assert_eq!(view.lag, vec![(2, 5)]);
        assert_eq!(
            (view.commit_index, view.applied_index, view.last_log_index),
            (48, 47, 50)
        );
        let follower = Status {
            role: Role::Follower,
            ..status
        };
        assert!(raft_view(2, &follower).lag.is_empty());
    }
}
