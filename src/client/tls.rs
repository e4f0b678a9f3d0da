//! TLS on the client port, with rustls: what `redis-cli --tls --cacert FILE`
//! and the client libraries' TLS options expect of a Redis server started
//! with `tls-port`. With a client CA, clients must also show a certificate it
//! signed (Redis's `tls-auth-clients yes`). Also the client side of the same,
//! for `example-ondisk backup` ([`client_config`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a client speaking plain RESP to a TLS port is told, in clear, before
/// the connection closes: otherwise it would see only a reset.
const PLAIN_CLIENT: &str = "-ERR this port speaks TLS only: connect with TLS \
    (redis-cli --tls --cacert CA-FILE, or rediss:// in a client library)\r\n";

/// Builds the TLS side of the port from PEM files; an error is one line
/// naming the file and what is wrong with it.
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<TlsAcceptor, String> {
    let shown = |path: &Path| path.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("--tls-cert-file {}: {e}", shown(cert_file)))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert-file {} holds no PEM certificate",
            shown(cert_file)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("--tls-key-file {}: {e}", shown(key_file)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--tls-client-ca-file {}: {e}", shown(ca_file)))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("--tls-client-ca-file {}: {e}", shown(ca_file)))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca-file {}: {e}", shown(ca_file)))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "--tls-cert-file {} and --tls-key-file {} do not make a pair: {e}",
            shown(cert_file),
            shown(key_file)
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS settings of a client of this port: trust the CAs in `ca_file`
/// and, if the port asks for a certificate, show `cert_and_key`. An error
/// is one line naming the file (by its flag) and what is wrong with it.
pub fn client_config(
    ca_file: &Path,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let shown = |path: &Path| path.display().to_string();
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-ca-file {}: {e}", shown(ca_file)))?;
    if cas.is_empty() {
        return Err(format!(
            "--tls-ca-file {} holds no PEM certificate",
            shown(ca_file)
        ));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("--tls-ca-file {}: {e}", shown(ca_file)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("--tls-cert-file {}: {e}", shown(cert_file)))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("--tls-key-file {}: {e}", shown(key_file)))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "--tls-cert-file {} and --tls-key-file {} do not make a pair: {e}",
                    shown(cert_file),
                    shown(key_file)
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Completes a client's TLS handshake. A client that spoke plain RESP is
/// told so in one line; `None` when the connection is not worth serving.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    peer: &str,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_LIMIT, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        tracing::debug!("client {peer} spoke plain text to the TLS port");
        // Read what it sent, so closing does not reset the answer away.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await;
        let _ = stream.write_all(PLAIN_CLIENT.as_bytes()).await;
        let _ = stream.shutdown().await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake with client {peer} failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("client {peer} did not finish its TLS handshake in time");
            None
        }
    }
}
