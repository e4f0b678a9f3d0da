//! Network partitions between real replicas on one machine.
//!
//! A small TCP proxy stands in front of each replica's Raft port: `--peers`
//! advertises the proxies, and each replica binds a hidden port of its own
//! (`--raft-listen`). Every Raft connection begins with a `Hello` frame that
//! names the caller and the callee, so the proxy knows which link a connection
//! carries. Cutting a link closes its open connections and refuses new ones;
//! healing lets them through again.
//!
//! Chosen over network namespaces because it needs no privileges and no setup
//! outside the test process, so it runs in parallel tests and in CI alike.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{free_port, lock};

/// Links that are cut, as (from, to) replica ids, and the live connections.
#[derive(Default)]
struct Links {
    cut: BTreeSet<(u64, u64)>,
    open: Vec<((u64, u64), TcpStream)>,
}

/// The proxies of one cluster.
pub struct Partitions {
    links: Arc<Mutex<Links>>,
    /// The `--peers` value (proxy addresses) every replica is given.
    pub peers: String,
    /// For replica `i` (index `i - 1`), the port it binds (`--raft-listen`).
    pub listen_ports: Vec<u16>,
}

impl Partitions {
    /// Starts proxies for replicas `1..=n`.
    pub fn start(n: u64) -> Partitions {
        let links = Arc::new(Mutex::new(Links::default()));
        let mut peers = Vec::new();
        let mut listen_ports = Vec::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
            let proxy_port = listener.local_addr().expect("proxy address").port();
            let replica_port = free_port();
            peers.push(format!("{id}=127.0.0.1:{proxy_port}"));
            listen_ports.push(replica_port);
            let links = links.clone();
            thread::spawn(move || {
                for caller in listener.incoming() {
                    let Ok(caller) = caller else { continue };
                    let links = links.clone();
                    thread::spawn(move || relay(caller, replica_port, &links));
                }
            });
        }
        Partitions {
            links,
            peers: peers.join(","),
            listen_ports,
        }
    }

    /// The extra flags replica `id` needs to sit behind its proxy.
    pub fn flags(&self, id: u64) -> Vec<String> {
        let port = self.listen_ports[usize::try_from(id - 1).expect("small id")];
        vec!["--raft-listen".into(), format!("127.0.0.1:{port}")]
    }

    /// Cuts replica `id` off from every other replica, both ways.
    pub fn isolate(&self, id: u64, all: &[u64]) {
        let mut links = lock(&self.links);
        for &other in all.iter().filter(|&&other| other != id) {
            links.cut.insert((id, other));
            links.cut.insert((other, id));
        }
        let cut = links.cut.clone();
        links.open.retain(|(link, stream)| {
            if cut.contains(link) {
                let _ = stream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Lets every link through again.
    pub fn heal(&self) {
        lock(&self.links).cut.clear();
    }
}

/// Carries one connection: reads the caller's Hello to learn the link, then
/// copies bytes both ways until either side closes or the link is cut.
fn relay(mut caller: TcpStream, replica_port: u16, links: &Mutex<Links>) {
    let mut length = [0u8; 4];
    if caller.read_exact(&mut length).is_err() {
        return;
    }
    let len = u32::from_be_bytes(length) as usize;
    if len > 64 * 1024 {
        return; // not a Hello
    }
    let mut hello = vec![0u8; len];
    if caller.read_exact(&mut hello).is_err() {
        return;
    }
    let Some(link) = hello_link(&hello) else {
        return;
    };
    let Ok(mut callee) = TcpStream::connect(("127.0.0.1", replica_port)) else {
        return;
    };
    {
        let mut links = lock(links);
        if links.cut.contains(&link) {
            return;
        }
        for stream in [&caller, &callee] {
            if let Ok(clone) = stream.try_clone() {
                links.open.push((link, clone));
            }
        }
    }
    if callee.write_all(&length).is_err() || callee.write_all(&hello).is_err() {
        return;
    }
    let (Ok(mut caller_in), Ok(mut callee_out)) = (caller.try_clone(), callee.try_clone()) else {
        return;
    };
    let forward = thread::spawn(move || {
        let _ = std::io::copy(&mut caller_in, &mut callee_out);
        let _ = callee_out.shutdown(Shutdown::Both);
    });
    let _ = std::io::copy(&mut callee, &mut caller);
    let _ = caller.shutdown(Shutdown::Both);
    let _ = forward.join();
}

/// (from, to) of a `{"Hello":{"cluster_id":..,"from":F,"to":T}}` frame.
fn hello_link(frame: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(frame).ok()?;
    let number_after = |field: &str| -> Option<u64> {
        let at = text.find(&format!("\"{field}\":"))? + field.len() + 3;
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    text.contains("\"Hello\"")
        .then(|| Some((number_after("from")?, number_after("to")?)))?
}
