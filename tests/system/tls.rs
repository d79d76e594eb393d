//! TLS termination at the gateway: with `gateway.tls` set to a generated certificate and
//! key, the shop answers over HTTPS (TLS 1.3 through rustls), a plain-HTTP client gets no
//! answer and breaks nothing, and a half or wrong configuration stops start-up naming the
//! key.

use std::{sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tideway::{App, Config};
use tideway_runtime::config::Validate as _;
use tideway_testkit::{TestServer, eventually_async};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{TlsConnector, rustls};

/// The response to `GET path` over TLS to `addr`, trusting only `ca`; `None` when the
/// connection or handshake fails.
async fn get_tls(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
) -> Option<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn the_gateway_terminates_tls_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = dir.path().join("gateway.crt");
    let key_file = dir.path().join("gateway.key");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let ca = CertificateDer::from_pem_file(&cert_file).unwrap();

    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.gateway.listen = "127.0.0.1:0".to_owned();
    config.gateway.tls.cert_file = Some(cert_file.clone());
    config.gateway.tls.key_file = Some(key_file.clone());
    config.resolve().unwrap();
    let app = App::embedded(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let server = TestServer::spawn(addr, |shutdown| app.run_until_stopped(shutdown));
    eventually_async(
        Duration::from_secs(30),
        "the shop to be ready over TLS",
        || async {
            get_tls(addr, &ca, "/health/ready")
                .await
                .is_some_and(|answer| answer.starts_with("HTTP/1.1 200"))
        },
    )
    .await;
    let items = get_tls(addr, &ca, "/api/v1/catalog/items?page_size=1")
        .await
        .unwrap();
    assert!(items.starts_with("HTTP/1.1 200"), "{items}");
    assert!(items.contains("\"items\""), "{items}");

    // Plain HTTP on the TLS port: no HTTP answer, and the server carries on.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    let live = get_tls(addr, &ca, "/health/live").await.unwrap();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    server.stop(crate::STOP_DEADLINE).await;

    // Half a configuration, or files that are not a certificate and key, stop start-up
    // naming the key.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (cert, key, named) in [
        (Some(cert_file.clone()), None, "gateway.tls.key_file"),
        (None, Some(key_file.clone()), "gateway.tls.cert_file"),
        (
            Some(garbage.clone()),
            Some(key_file.clone()),
            "gateway.tls.cert_file",
        ),
        (
            Some(cert_file.clone()),
            Some(garbage.clone()),
            "gateway.tls.key_file",
        ),
        (
            Some(dir.path().join("missing.crt")),
            Some(key_file.clone()),
            "gateway.tls.cert_file",
        ),
    ] {
        let mut bad = config.clone();
        bad.gateway.tls.cert_file = cert;
        bad.gateway.tls.key_file = key;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(named), "{err}");
    }
}
