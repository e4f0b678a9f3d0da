//! Growing and shrinking the cluster while it takes writes.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{free_port, replica_args, Cluster, ELECTION_TIMEOUT};

const SETTLE: Duration = Duration::from_secs(60);

fn info_field(port: u16, field: &str) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut c = client.get_connection().expect("connect");
    let text: String = redis::cmd("INFO").query(&mut c).expect("INFO");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

fn wait_for_members(cluster: &mut Cluster, id: u64, members: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = cluster.replica(id).status();
        if status.get("members") == members {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {id} never saw members {members}: {status}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn grow_to_five_under_writes_lose_two_and_shrink_back_to_three() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let writer_port = cluster.replica(1).client_port();
    let cluster_id = info_field(writer_port, "cluster_id");

    // A stream of writes through replica 1 the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{writer_port}/")).unwrap();
            let mut c = client.get_connection().expect("connect");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{i}");
                let reply: redis::RedisResult<String> =
                    redis::cmd("SET").arg(&key).arg(i).query(&mut c);
                if reply.as_deref() == Ok("OK") {
                    acknowledged.lock().unwrap().push(key);
                }
                i += 1;
            }
        })
    };
    let acks = || acknowledged.lock().unwrap().len();
    let wait_for_more_acks = |more: usize| {
        let target = acks() + more;
        let deadline = Instant::now() + SETTLE;
        while acks() < target {
            assert!(
                Instant::now() < deadline,
                "writes stopped being acknowledged"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_more_acks(50);
    let follower_of = |leader: u64| if leader == 2 { 3 } else { 2 };

    // Grow. Replica 4 joins by itself through replica 1's Raft address.
    let member_addr = format!("127.0.0.1:{}", harness::port_of(&cluster.peers, 1));
    let data = cluster.data_dir().to_path_buf();
    let port4 = free_port();
    let args = replica_args(
        4,
        &data,
        &format!("4=127.0.0.1:{port4}"),
        &["--cluster-id", &cluster_id, "--join", &member_addr],
    );
    cluster.spawn_extra(4, args);
    for id in [1, 4] {
        wait_for_members(&mut cluster, id, "1,2,3,4");
    }
    wait_for_more_acks(20);
    // Replica 5's --join names an address where nobody answers; a person adds
    // it from a follower's prompt instead.
    let nobody = format!("127.0.0.1:{}", free_port());
    let port5 = free_port();
    let args = replica_args(
        5,
        &data,
        &format!("5=127.0.0.1:{port5}"),
        &["--cluster-id", &cluster_id, "--join", &nobody],
    );
    cluster.spawn_extra(5, args);
    let reply = cluster
        .replica(follower_of(leader))
        .send(&format!("add-replica 5 127.0.0.1:{port5}"));
    assert_eq!(reply, "OK members=1,2,3,4,5");
    wait_for_more_acks(20);

    // The newcomers catch up (openraft counts a learner as caught up once it
    // lags by less than its replication threshold, so this can take a moment).
    for id in 1..=5 {
        wait_for_members(&mut cluster, id, "1,2,3,4,5");
    }

    // Two of five down: three still make a quorum, and writes go on.
    let leader = cluster.wait_for_leader(SETTLE);
    let down: Vec<u64> = (2..=5).filter(|id| *id != leader).take(2).collect();
    for &id in &down {
        cluster.replica(id).kill();
    }
    wait_for_more_acks(50);
    for &id in &down {
        cluster.replica(id).restart();
    }

    // Shrink back to three, from any member.
    let at = cluster.other_than(&[4, 5]);
    assert_eq!(
        cluster.replica(at).send("remove-replica 5"),
        "OK members=1,2,3,4"
    );
    assert_eq!(
        cluster.replica(at).send("remove-replica 4"),
        "OK members=1,2,3"
    );
    wait_for_more_acks(20);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer panicked");

    // A removed replica says so and stops.
    for id in [4u64, 5] {
        let exit = cluster.replica(id).wait_own_exit(SETTLE);
        assert_eq!(exit.code(), Some(0), "replica {id}");
        assert!(cluster
            .replica(id)
            .stderr()
            .contains("was removed from the cluster"));
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    for id in 1..=3 {
        wait_for_members(&mut cluster, id, "1,2,3");
        for key in acknowledged.iter().step_by(13).chain(acknowledged.last()) {
            assert!(
                !cluster.replica(id).get(key).starts_with("(nil)"),
                "replica {id} lost {key}"
            );
        }
    }
    eprintln!(
        "{} acknowledged writes through the whole change",
        acknowledged.len()
    );
}
