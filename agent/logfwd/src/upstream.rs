//! The forwarder's link to the computation management service: the
//! [`Upstream`] seam, and [`GrpcUpstream`], a tonic client of
//! `cvms.Service/Process` with optional TLS.
//!
//! This is a small, self-contained version of the agent's management
//! service settings (agent-api §1.3), kept in this one module so that it can
//! be replaced by the shared `cocos-cvms` crate later:
//!
//! | environment key | [`UpstreamConfig`] field | meaning |
//! | --- | --- | --- |
//! | `AGENT_CVM_GRPC_URL` | `url` | `host:port` (default `localhost:7001`), or a full `http://` / `https://` URL |
//! | `AGENT_CVM_GRPC_SERVER_CA_CERTS` | `server_ca_certs` | PEM file of the CA(s) the service's certificate must chain to; turns on TLS |
//! | `AGENT_CVM_GRPC_CLIENT_CERT` | `client_cert` | PEM certificate presented to the service (mutual TLS) |
//! | `AGENT_CVM_GRPC_CLIENT_KEY` | `client_key` | its PEM private key |
//! | `AGENT_CVM_ID` | `cvm_id` | sent as the `job-id` metadata |
//!
//! An empty value counts as unset, as in the Go agent. Unlike the Go agent, a
//! client certificate without `SERVER_CA_CERTS` is refused rather than
//! checked against system roots: the VM has none to trust, and a connection
//! that verifies nothing must not look like mutual TLS. Certificate files
//! are read at every dial, so that files appearing late (the 9p share) or
//! replaced ones are picked up.
//!
//! The forwarder's stream carries the metadata `job-id` (the CVM id) and
//! `connection-type: log-forwarder` (agent-api §6.2); what the service sends
//! back on it is read and ignored, and its end means "reconnect".

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cocos_proto::cvms::ClientStreamMessage;
use cocos_proto::cvms::service_client::ServiceClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Value of the `connection-type` metadata on the forwarder's stream.
pub const CONNECTION_TYPE: &str = "log-forwarder";

/// One open `Process` stream, as the forwarder uses it.
#[derive(Debug)]
pub struct Connection {
    /// Messages for the stream, in order. `send` fails once the stream is
    /// gone; a message is "handed over" when `send` returns.
    pub sender: mpsc::Sender<ClientStreamMessage>,
    /// Resolves when the service ended or broke the stream, with a
    /// description; a dropped sender counts as the stream's end too.
    pub closed: oneshot::Receiver<String>,
}

/// Whatever opens streams to the management service: [`GrpcUpstream`] in
/// production, an in-process fake in tests.
pub trait Upstream: Send + Sync + 'static {
    /// Dials and opens a new stream.
    fn open(&self) -> impl Future<Output = Result<Connection, UpstreamError>> + Send;
}

/// Why the management service could not be reached, or the settings are
/// unusable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A setting is invalid.
    #[error("{setting}: {problem}")]
    Setting {
        /// The environment key (or config field) at fault.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate or key file could not be read.
    #[error("read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Dialling failed (TCP, TLS or HTTP/2).
    #[error("connect to {url}: {reason}")]
    Connect {
        /// Where to.
        url: String,
        /// The transport's error with its causes.
        reason: String,
    },
}

/// Settings of the link to the management service (see the module docs
/// for the environment keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` or a full URL. Default `localhost:7001` (the Go agent's).
    pub url: String,
    /// CA certificates (PEM) for the service's certificate; turns on TLS.
    pub server_ca_certs: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// The CVM's id, sent as `job-id`. Default empty.
    pub cvm_id: String,
    /// Limit on dialling (TCP, TLS, HTTP/2 handshake). Default 10 s.
    pub connect_timeout_ms: u64,
    /// HTTP/2 ping interval, so that a silently dead link is noticed.
    /// Default 5 s.
    pub keepalive_interval_ms: u64,
    /// How long a ping may go unanswered before the link counts as dead.
    /// Default 5 s.
    pub keepalive_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: "localhost:7001".into(),
            server_ca_certs: None,
            client_cert: None,
            client_key: None,
            cvm_id: String::new(),
            connect_timeout_ms: 10_000,
            keepalive_interval_ms: 5_000,
            keepalive_timeout_ms: 5_000,
        }
    }
}

impl UpstreamConfig {
    /// The defaults overridden by the process environment.
    pub fn from_env() -> UpstreamConfig {
        let mut config = UpstreamConfig::default();
        config.apply_env(|key| std::env::var(key).ok());
        config
    }

    /// Overrides fields from the `AGENT_CVM_*` keys that `lookup` has
    /// (empty values are ignored).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let get = |key: &str| lookup(key).filter(|v| !v.is_empty());
        if let Some(url) = get("AGENT_CVM_GRPC_URL") {
            self.url = url;
        }
        if let Some(path) = get("AGENT_CVM_GRPC_SERVER_CA_CERTS") {
            self.server_ca_certs = Some(path.into());
        }
        if let Some(path) = get("AGENT_CVM_GRPC_CLIENT_CERT") {
            self.client_cert = Some(path.into());
        }
        if let Some(path) = get("AGENT_CVM_GRPC_CLIENT_KEY") {
            self.client_key = Some(path.into());
        }
        if let Some(id) = get("AGENT_CVM_ID") {
            self.cvm_id = id;
        }
    }

    fn tls(&self) -> bool {
        self.server_ca_certs.is_some()
    }
}

/// The production [`Upstream`]: dials the management service with tonic
/// (a new HTTP/2 connection per stream) and opens `cvms.Service/Process`.
#[derive(Debug, Clone)]
pub struct GrpcUpstream {
    config: UpstreamConfig,
    uri: String,
    job_id: AsciiMetadataValue,
}

impl GrpcUpstream {
    /// Checks the settings (files are read at each dial).
    pub fn new(config: UpstreamConfig) -> Result<GrpcUpstream, UpstreamError> {
        let setting = |setting, problem: &str| UpstreamError::Setting {
            setting,
            problem: problem.to_string(),
        };
        match (&config.client_cert, &config.client_key) {
            (Some(_), None) => {
                return Err(setting(
                    "AGENT_CVM_GRPC_CLIENT_KEY",
                    "missing, but AGENT_CVM_GRPC_CLIENT_CERT is set",
                ));
            }
            (None, Some(_)) => {
                return Err(setting(
                    "AGENT_CVM_GRPC_CLIENT_CERT",
                    "missing, but AGENT_CVM_GRPC_CLIENT_KEY is set",
                ));
            }
            (Some(_), Some(_)) if !config.tls() => {
                return Err(setting(
                    "AGENT_CVM_GRPC_SERVER_CA_CERTS",
                    "missing: a client certificate needs a CA to verify the service against",
                ));
            }
            _ => {}
        }
        let tls = config.tls();
        let uri = match config.url.split_once("://") {
            None => format!("{}://{}", if tls { "https" } else { "http" }, config.url),
            Some(("https", _)) if !tls => {
                return Err(setting(
                    "AGENT_CVM_GRPC_URL",
                    "https:// needs AGENT_CVM_GRPC_SERVER_CA_CERTS",
                ));
            }
            Some(("http", _)) if tls => {
                return Err(setting(
                    "AGENT_CVM_GRPC_URL",
                    "http:// would send in the clear although TLS is configured",
                ));
            }
            Some(("http" | "https", _)) => config.url.clone(),
            Some((scheme, _)) => {
                return Err(setting(
                    "AGENT_CVM_GRPC_URL",
                    &format!("unsupported scheme {scheme:?}"),
                ));
            }
        };
        Endpoint::from_shared(uri.clone())
            .map_err(|e| setting("AGENT_CVM_GRPC_URL", &format!("{:?}: {e}", config.url)))?;
        let job_id = MetadataValue::try_from(config.cvm_id.as_str()).map_err(|_| {
            setting(
                "AGENT_CVM_ID",
                "not valid as gRPC metadata (visible ASCII only)",
            )
        })?;
        Ok(GrpcUpstream {
            config,
            uri,
            job_id,
        })
    }

    /// The URL dialled (with its scheme).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn endpoint(&self) -> Result<Endpoint, UpstreamError> {
        let c = &self.config;
        let mut endpoint = Endpoint::from_shared(self.uri.clone())
            .map_err(|e| UpstreamError::Setting {
                setting: "AGENT_CVM_GRPC_URL",
                problem: e.to_string(),
            })?
            .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
            .http2_keep_alive_interval(Duration::from_millis(c.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(c.keepalive_timeout_ms))
            .keep_alive_while_idle(true);
        if let Some(ca) = &c.server_ca_certs {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&c.client_cert, &c.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| UpstreamError::Setting {
                    setting: "AGENT_CVM_GRPC_SERVER_CA_CERTS",
                    problem: error_chain(&e),
                })?;
        }
        Ok(endpoint)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|source| UpstreamError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// An error and its causes, `: `-separated (tonic's transport error says
/// only "transport error" by itself).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Upstream for GrpcUpstream {
    async fn open(&self) -> Result<Connection, UpstreamError> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|e| UpstreamError::Connect {
                url: self.uri.clone(),
                reason: error_chain(&e),
            })?;
        let mut client = ServiceClient::new(channel);
        // One message at a time: a message counts as handed over once the
        // transport has taken the one before it.
        let (sender, receiver) = mpsc::channel(1);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        request.metadata_mut().insert("job-id", self.job_id.clone());
        request.metadata_mut().insert(
            "connection-type",
            AsciiMetadataValue::from_static(CONNECTION_TYPE),
        );
        let (closed_tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            // The call is driven here; its response headers may come late
            // (a Go server sends them with its first message), while the
            // request body flows from the moment the call starts.
            let watch = async {
                match client.process(request).await {
                    Err(status) => format!("the service refused the stream: {status}"),
                    Ok(response) => {
                        let mut inbound = response.into_inner();
                        loop {
                            match inbound.message().await {
                                // The service has nothing to tell the forwarder.
                                Ok(Some(_)) => continue,
                                Ok(None) => break "the service ended the stream".to_string(),
                                Err(status) => break format!("the stream broke: {status}"),
                            }
                        }
                    }
                }
            };
            let mut closed_tx = closed_tx;
            tokio::select! {
                reason = watch => { let _ = closed_tx.send(reason); }
                // The forwarder dropped the connection (shutdown, or it
                // gave up on it): stop the call.
                () = closed_tx.closed() => {}
            }
        });
        Ok(Connection { sender, closed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> UpstreamConfig {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = UpstreamConfig::default();
        config.apply_env(|k| env.get(k).cloned());
        config
    }

    #[test]
    fn environment_keys_of_agent_api_1_3() {
        let c = from(&[
            ("AGENT_CVM_GRPC_URL", "cvms.example:7001"),
            ("AGENT_CVM_GRPC_SERVER_CA_CERTS", "/etc/certs/ca.pem"),
            ("AGENT_CVM_GRPC_CLIENT_CERT", "/etc/certs/cert.pem"),
            ("AGENT_CVM_GRPC_CLIENT_KEY", "/etc/certs/key.pem"),
            ("AGENT_CVM_ID", "0b8c0ba1-5a3e-4c7b-9c39-2b1f7f0e2e11"),
        ]);
        assert_eq!(c.url, "cvms.example:7001");
        assert_eq!(
            c.server_ca_certs.as_deref(),
            Some(Path::new("/etc/certs/ca.pem"))
        );
        assert_eq!(
            c.client_cert.as_deref(),
            Some(Path::new("/etc/certs/cert.pem"))
        );
        assert_eq!(
            c.client_key.as_deref(),
            Some(Path::new("/etc/certs/key.pem"))
        );
        assert_eq!(c.cvm_id, "0b8c0ba1-5a3e-4c7b-9c39-2b1f7f0e2e11");
        let up = GrpcUpstream::new(c).expect("valid");
        assert_eq!(up.uri(), "https://cvms.example:7001");
    }

    #[test]
    fn empty_values_are_unset_and_defaults_hold() {
        let c = from(&[
            ("AGENT_CVM_GRPC_URL", ""),
            ("AGENT_CVM_GRPC_SERVER_CA_CERTS", ""),
        ]);
        assert_eq!(c, UpstreamConfig::default());
        assert_eq!(
            GrpcUpstream::new(c).expect("valid").uri(),
            "http://localhost:7001"
        );
    }

    #[test]
    fn inconsistent_settings_are_refused_naming_the_key() {
        let refused = |pairs: &[(&str, &str)]| match GrpcUpstream::new(from(pairs)) {
            Err(UpstreamError::Setting { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(&[("AGENT_CVM_GRPC_CLIENT_CERT", "c.pem")]),
            "AGENT_CVM_GRPC_CLIENT_KEY"
        );
        assert_eq!(
            refused(&[
                ("AGENT_CVM_GRPC_CLIENT_CERT", "c.pem"),
                ("AGENT_CVM_GRPC_CLIENT_KEY", "k.pem")
            ]),
            "AGENT_CVM_GRPC_SERVER_CA_CERTS"
        );
        assert_eq!(
            refused(&[
                ("AGENT_CVM_GRPC_URL", "http://h:1"),
                ("AGENT_CVM_GRPC_SERVER_CA_CERTS", "ca.pem")
            ]),
            "AGENT_CVM_GRPC_URL"
        );
        assert_eq!(
            refused(&[("AGENT_CVM_GRPC_URL", "https://h:1")]),
            "AGENT_CVM_GRPC_URL"
        );
        assert_eq!(refused(&[("AGENT_CVM_ID", "a\nb")]), "AGENT_CVM_ID");
    }
}
