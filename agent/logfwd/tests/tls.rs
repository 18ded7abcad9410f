//! The real upstream over mutual TLS, with certificates made by openssl:
//! the forwarder presents its client certificate and checks the service's
//! against the configured CA, and delivers nothing to a service whose
//! certificate another CA signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cocos_logfwd::{Level, LogClient};
use common::{CVM_ID, FakeCvms, StreamInfo, client_options, config, names, start_forwarder};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 CA `{name}-ca.pem`/`.key`.
fn make_ca(dir: &Path, name: &str) {
    let (pem, key, subj) = (
        format!("{name}-ca.pem"),
        format!("{name}-ca.key"),
        format!("/CN={name} test CA"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
        ],
    );
}

/// `{name}.pem`/`.key` signed by CA `{ca}`, with `ext` (SAN, EKU).
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let (pem, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// TLS for the fake service: its certificate from CA `server_ca`, client
/// certificates required from CA `main`.
fn server_tls(dir: &Path, server: &str) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(dir, &format!("{server}.pem")),
            read(dir, &format!("{server}.key")),
        ))
        .client_ca_root(Certificate::from_pem(read(dir, "main-ca.pem")))
}

fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    make_ca(p, "main");
    make_ca(p, "other");
    let server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    make_leaf(p, "main", "server", server_ext);
    make_leaf(p, "other", "impostor", server_ext);
    make_leaf(p, "main", "client", "extendedKeyUsage=clientAuth\n");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_openssl_made_certificates_delivers() {
    let pki = pki();
    let fake = FakeCvms::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Some(server_tls(pki.path(), "server")),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &fake.url());
    config.upstream.server_ca_certs = Some(pki.path().join("main-ca.pem"));
    config.upstream.client_cert = Some(pki.path().join("client.pem"));
    config.upstream.client_key = Some(pki.path().join("client.key"));
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();
    client.log(Level::Info, "c1", "over TLS");
    client.event("state", "c1", "ok", Vec::new());
    fake.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(names(&fake.messages()), ["over TLS", "event:state:ok"]);
    assert_eq!(
        fake.streams(),
        [StreamInfo {
            job_id: Some(CVM_ID.into()),
            connection_type: Some("log-forwarder".into())
        }]
    );
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_certificate_from_another_ca_gets_nothing() {
    let pki = pki();
    let fake = FakeCvms::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Some(server_tls(pki.path(), "impostor")),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &fake.url());
    config.upstream.server_ca_certs = Some(pki.path().join("main-ca.pem"));
    config.upstream.client_cert = Some(pki.path().join("client.pem"));
    config.upstream.client_key = Some(pki.path().join("client.key"));
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();
    client.log(Level::Info, "c1", "secret");
    assert!(client.flush(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.messages().is_empty());
    assert!(fake.streams().is_empty());
    // Still buffered, not lost.
    let stats = forwarder.stats().unwrap();
    assert_eq!((stats.last_seq, stats.acked), (1, 0));
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}
