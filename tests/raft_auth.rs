//! A cluster secret on the Raft port (`--cluster-secret-file`, or
//! EXAMPLE_ONDISK_CLUSTER_SECRET): members prove it to each other at the
//! opening of every connection. A replica with another secret or none, and a
//! raw peer that forges frames, are refused with a clear line on both sides
//! and change nothing.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use harness::{port_of, replica_args, temp_dir, Cluster, Replica, ELECTION_TIMEOUT};

/// 32 random bytes in base64, as the README says to make one.
const SECRET: &str = "q2mJ0Yb6v7cXW1mKk3fP8s9dT4uR0eZaHq1LxN5oVgE=";
const ANOTHER_SECRET: &str = "Zk3pW8rT1yQ6uN0aB4cD7eF2gH5iJ9kL3mO6pR8sT0U=";

/// How long the refused replica is watched for: three of its longest
/// election timeouts (1 s), each ending in a refused attempt to stand, while
/// the cluster goes on.
const WATCHED_FOR: Duration = Duration::from_secs(3);
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("write a secret file");
    path.display().to_string()
}

/// What `replica` wrote to stderr after the first `from` bytes.
fn stderr_since(replica: &Replica, from: usize) -> String {
    replica.stderr().get(from..).unwrap_or_default().to_string()
}

#[test]
fn a_cluster_with_a_secret_writes_reads_and_forwards() {
    let secrets = temp_dir();
    let file = secret_file(secrets.path(), "cluster.secret", SECRET);
    let mut cluster = Cluster::start_with(3, &["--cluster-secret-file", &file]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let other = cluster.other_than(&[leader, follower]);

    // A put at a follower is forwarded (Propose); a get at another follower
    // asks the leader for a read index (ReadIndex): both over the port.
    cluster.replica(follower).put("greeting", "hello");
    assert_eq!(cluster.replica(other).get("greeting"), "hello");
    cluster.replica(leader).put("reply", "hi");
    assert_eq!(cluster.replica(follower).get("reply"), "hi");
    cluster.agreed_checksum(&[1, 2, 3], ELECTION_TIMEOUT);

    for id in 1..=3 {
        let stderr = cluster.replica(id).stderr();
        assert!(
            !stderr.contains("cluster secret"),
            "replica {id} refused someone:\n{stderr}"
        );
        assert_eq!(cluster.replica(id).status().get("members"), "1,2,3");
    }
}

#[test]
fn the_secret_may_come_from_the_environment_instead() {
    // A running cluster without a secret takes one at a restart of all.
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("before", "open");
    for id in 1..=3 {
        cluster.replica(id).kill();
    }
    for id in 1..=3 {
        let replica = cluster.replica(id);
        replica
            .env
            .push(("EXAMPLE_ONDISK_CLUSTER_SECRET".into(), SECRET.into()));
        replica.restart();
    }
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    cluster.replica(follower).put("after", "closed");
    cluster.assert_all_readable(
        cluster.other_than(&[leader, follower]),
        &[
            ("before".into(), "open".into()),
            ("after".into(), "closed".into()),
        ],
    );
}

/// Replica `out` of a cluster with [`SECRET`] is restarted as an impostor
/// (another secret, or none). It must never lead, receive no entries and
/// move no one's term, while the other two elect, write and read; both sides
/// must say why in one line.
#[test]
fn a_replica_with_another_secret_or_none_is_refused_and_changes_nothing() {
    let secrets = temp_dir();
    let good = secret_file(secrets.path(), "cluster.secret", SECRET);
    let wrong = secret_file(secrets.path(), "other.secret", ANOTHER_SECRET);
    let mut cluster = Cluster::start_with(3, &["--cluster-secret-file", &good]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let out = cluster.other_than(&[leader]);
    let members: Vec<u64> = (1..=3).filter(|id| *id != out).collect();
    cluster.replica(leader).put("before", "1");
    let index = cluster.replica(leader).status().applied();
    cluster.replica(out).wait_applied(index, ELECTION_TIMEOUT);
    cluster.replica(out).kill();

    let cases: [(&str, Vec<&str>); 2] = [
        ("another secret", vec!["--cluster-secret-file", &wrong]),
        ("no secret", vec![]),
    ];
    for (what, flags) in cases {
        let leader = cluster.wait_for_leader_among(&members, ELECTION_TIMEOUT);
        let term = cluster.replica(leader).status().term();
        let seen: Vec<usize> = members
            .iter()
            .map(|&id| cluster.replica(id).stderr().len())
            .collect();
        let data = cluster.data_dir().to_path_buf();
        let mut impostor =
            Replica::spawn(out, &data, replica_args(out, &data, &cluster.peers, &flags));
        let start = impostor.status();

        // Watch it stand for election again and again, refused each time,
        // while the others take writes.
        let watching = Instant::now();
        let deadline = watching + WATCH_TIMEOUT;
        let mut written = 0;
        loop {
            let status = impostor.status();
            assert_ne!(status.role(), "leader", "{what}: {status}");
            // With pre-vote its term stays put: the others refuse it before
            // it raises one. So watch it for a few election timeouts.
            if watching.elapsed() >= WATCHED_FOR && written >= 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the impostor stopped standing for election: {status}"
            );
            cluster
                .replica(leader)
                .put(&format!("{what}-{written}").replace(' ', "-"), "x");
            written += 1;
            thread::sleep(Duration::from_millis(200));
        }

        // No entries reached it, nor a leader's word: it restarted believing
        // in the leader of its last term and, refused pre-votes, never raised
        // its term, so it believes just that still. The others kept their
        // leader and its term.
        let status = impostor.status();
        assert_eq!(status.term(), start.term(), "{what}: {status}");
        assert_eq!(status.leader(), start.leader(), "{what}: {status}");
        assert_eq!(status.applied(), start.applied(), "{what}: {status}");
        assert_eq!(
            status.number("last_log_index"),
            start.number("last_log_index"),
            "{what}"
        );
        assert_eq!(
            cluster.wait_for_leader_among(&members, ELECTION_TIMEOUT),
            leader,
            "{what}"
        );
        assert_eq!(cluster.replica(leader).status().term(), term, "{what}");

        // Both sides said why, in a line that names the secret.
        for (i, &id) in members.iter().enumerate() {
            let said = stderr_since(cluster.replica(id), seen[i]);
            let line = said
                .lines()
                .find(|l| l.starts_with("note:") && l.contains(&format!("replica {out}")));
            let line = line.unwrap_or_else(|| panic!("{what}: replica {id} said:\n{said}"));
            assert!(line.contains("cluster secret"), "{what}: {line}");
        }
        let said = impostor.stderr();
        assert!(
            said.lines()
                .any(|l| l.starts_with("note:") && l.contains("cluster secret")),
            "{what}: the impostor said:\n{said}"
        );
        impostor.kill();
    }

    // With the right secret again, it catches up.
    cluster.replica(out).restart();
    cluster.assert_all_readable(
        out,
        &[
            ("before".into(), "1".into()),
            ("no-secret-0".into(), "x".into()),
        ],
    );
    cluster.agreed_checksum(&[1, 2, 3], ELECTION_TIMEOUT);
}

// ---------------------------------------------------------------------------
// Forged frames from a raw TCP peer
// ---------------------------------------------------------------------------

fn frame(json: &str) -> Vec<u8> {
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// One connection to a Raft port, spoken to frame by frame.
struct RawPeer(TcpStream);

impl RawPeer {
    fn connect(port: u16) -> RawPeer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        RawPeer(stream)
    }

    /// Sends one frame (the replica may already have closed: ignored).
    fn send(&mut self, json: &str) {
        let _ = self.0.write_all(&frame(json));
    }

    /// The next frame's JSON, or `None` once the replica has closed.
    fn receive(&mut self) -> Option<serde_json::Value> {
        let mut length = [0u8; 4];
        self.0.read_exact(&mut length).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
        self.0.read_exact(&mut body).ok()?;
        Some(serde_json::from_slice(&body).expect("the replica answers JSON"))
    }

    /// Everything else the replica sends before it closes.
    fn rest(&mut self) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| self.receive()).collect()
    }
}

/// A request that would change the leader's state if it were heard: a vote
/// and an append for term 99, as if from replica `from`.
fn forged_requests(from: u64) -> [String; 2] {
    let vote = format!(r#"{{"leader_id":{{"term":99,"node_id":{from}}},"committed":false}}"#);
    [
        format!(r#"{{"Vote":{{"vote":{vote},"last_log_id":null}}}}"#),
        format!(
            r#"{{"AppendEntries":{{"vote":{},"prev_log_id":null,"entries":[],"leader_commit":null}}}}"#,
            vote.replace("false", "true")
        ),
    ]
}

fn hello(cluster_id: &str, from: u64, to: u64, nonce: Option<&str>) -> String {
    let nonce = nonce.map_or(String::new(), |n| format!(r#","nonce":"{n}""#));
    format!(
        r#"{{"Hello":{{"cluster_id":"{cluster_id}","from":{from},"to":{to},"handshake":2{nonce}}}}}"#
    )
}

/// 32 bytes in base64, as a caller's nonce.
const NONCE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn forged_openings_on_the_raft_port_change_nothing() {
    let secrets = temp_dir();
    let file = secret_file(secrets.path(), "cluster.secret", SECRET);
    let cluster_id = "forgery-test";
    let mut cluster = Cluster::start_with(
        3,
        &["--cluster-secret-file", &file, "--cluster-id", cluster_id],
    );
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let member = cluster.other_than(&[leader]);
    cluster.replica(leader).put("before", "forgery");
    let port = port_of(&cluster.peers, leader);
    let before = cluster.replica(leader).status();

    // Each opening pretends to come from a real member, of the right cluster.
    let forge = |peer: &mut RawPeer| {
        for request in forged_requests(member) {
            peer.send(&request);
        }
    };
    let refused = |answers: &[serde_json::Value], what: &str| {
        assert!(
            answers
                .iter()
                .all(|a| a.get("Welcome").is_none() && a != "Welcome"),
            "{what} was welcomed: {answers:?}"
        );
        assert!(
            answers.iter().any(|a| a.get("Unauthenticated").is_some()),
            "{what} got {answers:?}"
        );
    };

    // A hello without a nonce (a replica without the secret), then requests.
    let mut peer = RawPeer::connect(port);
    peer.send(&hello(cluster_id, member, leader, None));
    forge(&mut peer);
    refused(&peer.rest(), "a hello without a nonce");

    // A hello with a nonce, then requests instead of a proof.
    let mut peer = RawPeer::connect(port);
    peer.send(&hello(cluster_id, member, leader, Some(NONCE)));
    let challenge = peer.receive().expect("a challenge");
    let theirs = challenge["Challenge"]["proof"]
        .as_str()
        .unwrap_or_else(|| panic!("not a challenge: {challenge}"))
        .to_string();
    forge(&mut peer);
    refused(&peer.rest(), "requests instead of a proof");

    // A forged proof, and the replica's own proof sent back, then requests.
    for (what, proof) in [
        (
            "a forged proof",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
        ),
        ("the replica's own proof reflected", theirs),
    ] {
        let mut peer = RawPeer::connect(port);
        peer.send(&hello(cluster_id, member, leader, Some(NONCE)));
        peer.receive().expect("a challenge");
        peer.send(&format!(r#"{{"Proof":{{"proof":"{proof}"}}}}"#));
        forge(&mut peer);
        refused(&peer.rest(), what);
    }

    // A malformed nonce; a handshake format from the future.
    let mut peer = RawPeer::connect(port);
    peer.send(&hello(cluster_id, member, leader, Some("c2hvcnQ=")));
    forge(&mut peer);
    refused(&peer.rest(), "a malformed nonce");
    let mut peer = RawPeer::connect(port);
    peer.send(
        &hello(cluster_id, member, leader, Some(NONCE))
            .replace("\"handshake\":2", "\"handshake\":3"),
    );
    forge(&mut peer);
    let answers = peer.rest();
    assert!(
        answers.iter().any(|a| a["Refused"]
            .as_str()
            .is_some_and(|why| why.contains("handshake formats up to 2"))),
        "a future format got {answers:?}"
    );

    // The leader is unharmed: the same leader in the same term (the term-99
    // requests were never heard), still writing, and it said why it refused.
    let status = cluster.replica(leader).status();
    assert_eq!(status.role(), "leader", "{status}");
    assert_eq!(status.term(), before.term(), "{status}");
    cluster.replica(leader).put("after", "forgery");
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("before"), "forgery", "replica {id}");
        assert_eq!(cluster.replica(id).get("after"), "forgery", "replica {id}");
    }
    let said = cluster.replica(leader).stderr();
    for reason in [
        "it offers no cluster secret",
        "it sent a request before proving it holds the cluster secret",
        "its proof of the cluster secret is wrong",
        "its hello's nonce is malformed",
    ] {
        assert!(
            said.lines()
                .any(|l| l.starts_with("note: refused replica") && l.contains(reason)),
            "no note that {reason}:\n{said}"
        );
    }
}
