//! Real network partitions: each replica in a network namespace of its own.
//!
//! The topology of one cluster (every name ends in this process's id and a
//! counter, so tests running in parallel never share one):
//!
//! ```text
//!   ondisk-P-C-r1 (eth0 10.0.0.1) ─┐
//!   ondisk-P-C-r2 (eth0 10.0.0.2) ─┼─ v1/v2/v3 in bridge br0 of ondisk-P-C-hub (10.0.0.254)
//!   ondisk-P-C-r3 (eth0 10.0.0.3) ─┘
//! ```
//!
//! Each replica's veth pair has one end (`eth0`) in its namespace and the
//! other (`vN`) in the hub's bridge. The test's clients connect from inside
//! the hub ([`Network::in_hub`]), so no address, route or link is added to
//! the machine's own namespace, and every cluster can use the same private
//! range without meeting another.
//!
//! [`Network::cut`] turns the replica's bridge port off (STP state
//! "disabled"): frames in both directions are dropped while both ends of the
//! link stay up, as when a switch port fails. Nothing is reset, so a
//! connection open across the cut hangs until a timeout, as on a real network.
//!
//! Needs root (`ip netns add`, `setns`); [`Network::create`] says why it cannot
//! run instead, and the tests print that line and pass.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the clusters of this test process, for unique namespace names.
static NEXT_NETWORK: AtomicU64 = AtomicU64::new(0);

/// The namespaces, veths and bridge of one cluster; all deleted when dropped.
pub struct Network {
    prefix: String,
    /// Every namespace made so far, the hub first; deleted in [`Drop`].
    made: Vec<String>,
}

impl Network {
    /// Makes the hub and one namespace per replica `1..=n`, linked through the
    /// hub's bridge. `Err` says in one line why this machine cannot (not
    /// root, no `ip`, no veth or bridge support); whatever was made is gone.
    pub fn create(n: u64) -> Result<Network, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        let prefix = format!(
            "ondisk-{}-{}",
            std::process::id(),
            NEXT_NETWORK.fetch_add(1, Ordering::Relaxed)
        );
        let mut network = Network {
            prefix,
            made: Vec::new(),
        };
        network.build(n)?;
        Ok(network)
    }

    fn build(&mut self, n: u64) -> Result<(), String> {
        let hub = self.hub();
        self.add_namespace(&hub)?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", "10.0.0.254/24", "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for id in 1..=n {
            let ns = self.namespace(id);
            let port = format!("v{id}");
            self.add_namespace(&ns)?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &hub,
            ])?;
            let cidr = format!("{}/24", self.address(id));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace replica `id` runs in.
    pub fn namespace(&self, id: u64) -> String {
        format!("{}-r{id}", self.prefix)
    }

    /// Replica `id`'s address, reachable from the other replicas and the hub.
    pub fn address(&self, id: u64) -> String {
        format!("10.0.0.{id}")
    }

    /// Replica `id`'s link drops every frame, both ways, until [`Network::heal`].
    pub fn cut(&self, id: u64) {
        self.set_port_state(id, "0");
    }

    /// Replica `id`'s link carries frames again.
    pub fn heal(&self, id: u64) {
        self.set_port_state(id, "3");
    }

    /// STP port states: 0 disabled, 3 forwarding.
    fn set_port_state(&self, id: u64, state: &str) {
        let port = format!("v{id}");
        let out = Command::new("bridge")
            .args([
                "-n",
                &self.hub(),
                "link",
                "set",
                "dev",
                &port,
                "state",
                state,
            ])
            .output()
            .expect("run the bridge command");
        assert!(
            out.status.success(),
            "bridge link set dev {port} state {state} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Runs `open` on a thread inside the hub's namespace, so the sockets it
    /// opens (a client connection, say) reach every replica; they keep
    /// working from any thread afterwards. The calling thread stays where it is.
    pub fn in_hub<T: Send>(&self, open: impl FnOnce() -> T + Send) -> T {
        // Where `ip netns add` mounts it (iproute2's NETNS_RUN_DIR).
        let path = format!("/var/run/netns/{}", self.hub());
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file =
                        File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    // SAFETY: `file` is an open network-namespace file for
                    // the whole call; setns changes only this thread, which
                    // ends when `open` returns.
                    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        entered,
                        0,
                        "cannot enter {path}: {}",
                        std::io::Error::last_os_error()
                    );
                    open()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Network {
    /// Deleting a namespace deletes the links in it: the replicas' veth pairs
    /// with theirs, the bridge with the hub. The replicas must be gone first
    /// ([`super::Cluster`] kills them before dropping this).
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("could not delete network namespace {name}: {e}");
            }
        }
    }
}

/// Runs `ip ARGS`; `Err` is one line naming the command and its complaint.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
