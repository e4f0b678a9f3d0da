//! TLS on the client port: redis-cli with `--tls --cacert` is served, a
//! plain-text client is told in one line to use TLS, and a client without a
//! certificate is turned away when the port asks for one.

mod harness;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{fresh_peers, replica_args, run_once, temp_dir, Cluster, ELECTION_TIMEOUT};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test CA, a server certificate for 127.0.0.1 and a client certificate,
/// written as PEM files into `dir`.
struct Certificates {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_certificates(dir: &Path) -> Certificates {
    std::fs::create_dir_all(dir).unwrap();
    // Distinct names: a certificate whose issuer is its own subject is
    // taken by OpenSSL (redis-cli) for a self-signed one.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "example-ondisk test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &ca).unwrap();
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let (client_cert, client_key) = issue(vec!["a-client".into()], "client");
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Certificates {
        ca: ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn have_redis_cli() -> bool {
    let found = Command::new("redis-cli").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped: redis-cli is not installed (apt-get install -y redis-tools)");
    }
    found
}

/// What redis-cli printed (stdout and stderr, trimmed) for `args` at `port`.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim().to_string()
}

/// Polls until the replica's client port accepts TCP connections.
fn wait_port(port: u16) {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn redis_cli_with_tls_is_served_and_plain_text_is_told_to_use_tls() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let certs = make_certificates(dir.path());
    let (cert, key) = (path(&certs.server_cert), path(&certs.server_key));
    let mut cluster = Cluster::start_with(3, &["--tls-cert-file", &cert, "--tls-key-file", &key]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let port = cluster.replica(follower).client_port();
    wait_port(port);
    let ca = path(&certs.ca);
    let tls = ["--tls", "--cacert", ca.as_str()];

    let set = [&tls[..], &["SET", "k", "over tls"]].concat();
    assert_eq!(redis_cli(port, &set), "OK");
    let get = [&tls[..], &["GET", "k"]].concat();
    assert_eq!(redis_cli(port, &get), "over tls");

    let plain = redis_cli(port, &["SET", "k", "in clear"]);
    assert!(plain.contains("this port speaks TLS only"), "{plain}");
    assert_eq!(
        redis_cli(port, &get),
        "over tls",
        "the plain SET changed nothing"
    );

    // A CA that did not sign the server's certificate: the client refuses it.
    let other = make_certificates(&dir.path().join("other"));
    let strange_ca = path(&other.ca);
    let refused = redis_cli(port, &["--tls", "--cacert", &strange_ca, "GET", "k"]);
    assert!(!refused.contains("over tls"), "{refused}");
}

#[test]
fn a_port_that_asks_for_client_certificates_serves_only_clients_that_show_one() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let certs = make_certificates(dir.path());
    let (cert, key, ca) = (
        path(&certs.server_cert),
        path(&certs.server_key),
        path(&certs.ca),
    );
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-client-ca-file",
            &ca,
        ],
    );
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(1).client_port();
    wait_port(port);
    let (client_cert, client_key) = (path(&certs.client_cert), path(&certs.client_key));
    let with_cert = [
        "--tls",
        "--cacert",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "SET",
        "k",
        "v",
    ];
    assert_eq!(redis_cli(port, &with_cert), "OK");
    let without = redis_cli(port, &["--tls", "--cacert", &ca, "SET", "k", "w"]);
    assert_ne!(without, "OK");
    let get = [&with_cert[..7], &["GET", "k"]].concat();
    assert_eq!(redis_cli(port, &get), "v");
}

#[test]
fn tls_files_that_cannot_serve_are_refused_with_one_line() {
    let dir = temp_dir();
    let certs = make_certificates(dir.path());
    let peers = fresh_peers(3);
    let data = dir.path().join("data");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let other = make_certificates(&dir.path().join("other"));
    let cases = [
        (
            path(&garbage),
            path(&certs.server_key),
            "holds no PEM certificate",
        ),
        (path(&certs.server_cert), path(&garbage), "--tls-key-file"),
        (
            path(&certs.server_cert),
            path(&other.server_key),
            "do not make a pair",
        ),
        (
            path(&dir.path().join("missing.crt")),
            path(&certs.server_key),
            "--tls-cert-file",
        ),
    ];
    for (cert, key, says) in cases {
        let args = replica_args(
            1,
            &data,
            &peers,
            &["--tls-cert-file", &cert, "--tls-key-file", &key],
        );
        let outcome = run_once(&args, Duration::from_secs(20));
        assert_eq!(outcome.code, Some(1), "{outcome}");
        let errors: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{outcome}");
        assert!(errors[0].contains(says), "{}", errors[0]);
        assert!(!data.exists(), "a refused start created {}", data.display());
    }
    // A key without its certificate is a usage error (exit 2).
    let args = replica_args(
        1,
        &data,
        &peers,
        &["--tls-key-file", &path(&certs.server_key)],
    );
    let outcome = run_once(&args, Duration::from_secs(20));
    assert_eq!(outcome.code, Some(2), "{outcome}");
}

/// `example-ondisk backup` against a TLS port: with the CA it gets the copy;
/// without TLS, or trusting another CA, it fails with one line and writes nothing.
#[test]
fn backup_over_tls_needs_the_ca_that_signed_the_port() {
    let dir = temp_dir();
    let certs = make_certificates(dir.path());
    let (cert, key) = (path(&certs.server_cert), path(&certs.server_key));
    let mut cluster = Cluster::start_with(1, &["--tls-cert-file", &cert, "--tls-key-file", &key]);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(1).client_port();
    wait_port(port);
    let out = dir.path().join("tls.backup");
    let from = format!("127.0.0.1:{port}");
    let other = make_certificates(&dir.path().join("other"));
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", "--from", &from, "--out", out.to_str().unwrap()];
        args.extend(extra);
        harness::run_once_str(&args, Duration::from_secs(60))
    };

    for (extra, says) in [
        (vec![], "this port speaks TLS only"),
        (
            vec!["--tls-ca-file", other.ca.to_str().unwrap()],
            "TLS handshake",
        ),
    ] {
        let outcome = backup(&extra);
        assert_eq!(outcome.code, Some(1), "{outcome}");
        let errors: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{outcome}");
        assert!(errors[0].contains(says), "{}", errors[0]);
        assert!(!out.exists(), "{says}: a backup was written");
    }

    let outcome = backup(&["--tls-ca-file", certs.ca.to_str().unwrap()]);
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(outcome.stdout.contains("applied="), "{outcome}");
    assert!(out.exists());
}
