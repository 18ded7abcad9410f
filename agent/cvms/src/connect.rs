//! Dialling the management service and opening the `cvms.Service/Process`
//! stream with the metadata the Go service expects (agent-api.md §1.3,
//! §6.2).

use std::path::Path;
use std::time::Duration;

use cocos_proto::cvms::service_client::ServiceClient;
use cocos_proto::cvms::{ClientStreamMessage, ServerStreamMessage};
use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::settings::{CvmsSettings, Security, SettingsError};

/// Metadata key carrying this VM's id ([`CvmsSettings::cvm_id`]) on every
/// `Process` stream.
pub const JOB_ID_METADATA: &str = "job-id";
/// Metadata key telling the service which of the VM's two streams this is.
/// The agent's control stream leaves it out.
pub const CONNECTION_TYPE_METADATA: &str = "connection-type";
/// The log forwarder's value of [`CONNECTION_TYPE_METADATA`].
pub const LOG_FORWARDER_CONNECTION_TYPE: &str = "log-forwarder";

/// Why the service could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings are inconsistent.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL, the TLS configuration or the dial failed.
    #[error("dialling the computation management service at {uri}: {source}")]
    Transport {
        /// The URI dialled.
        uri: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

/// The endpoint the settings describe: plaintext, TLS (with the given CA
/// bundle, or the system roots when only a client identity is given) or
/// mTLS; HTTP/2 keep-alive every 20 s so that a dead link is noticed and
/// re-dialled rather than waited on forever.
pub fn endpoint(settings: &CvmsSettings) -> Result<Endpoint, ConnectError> {
    settings.check()?;
    let uri = settings.uri();
    let transport = |source| ConnectError::Transport {
        uri: uri.clone(),
        source,
    };
    let mut ep = Endpoint::from_shared(uri.clone())
        .map_err(transport)?
        .connect_timeout(settings.dial_timeout)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if settings.security() != Security::Plaintext {
        let mut tls = ClientTlsConfig::new();
        match &settings.server_ca_certs {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&settings.client_cert, &settings.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        ep = ep.tls_config(tls).map_err(transport)?;
    }
    Ok(ep)
}

/// Dials the management service now.
pub async fn connect(settings: &CvmsSettings) -> Result<Channel, ConnectError> {
    let ep = endpoint(settings)?;
    ep.connect()
        .await
        .map_err(|source| ConnectError::Transport {
            uri: settings.uri(),
            source,
        })
}

/// Opens `Process` on `channel`, sending `outbound` and returning the
/// service's messages. Adds [`JOB_ID_METADATA`] = `job_id`, and
/// [`CONNECTION_TYPE_METADATA`] = `connection_type` when given (the log
/// forwarder passes [`LOG_FORWARDER_CONNECTION_TYPE`]).
pub async fn open_process<S>(
    channel: Channel,
    job_id: &str,
    connection_type: Option<&str>,
    outbound: S,
) -> Result<tonic::Streaming<ServerStreamMessage>, tonic::Status>
where
    S: Stream<Item = ClientStreamMessage> + Send + 'static,
{
    let value = |key: &str, v: &str| {
        MetadataValue::try_from(v).map_err(|_| {
            tonic::Status::invalid_argument(format!(
                "{key} metadata {v:?} is not a valid header value"
            ))
        })
    };
    let mut request = tonic::Request::new(outbound);
    request
        .metadata_mut()
        .insert(JOB_ID_METADATA, value(JOB_ID_METADATA, job_id)?);
    if let Some(t) = connection_type {
        request.metadata_mut().insert(
            CONNECTION_TYPE_METADATA,
            value(CONNECTION_TYPE_METADATA, t)?,
        );
    }
    let mut client = ServiceClient::new(channel);
    Ok(client.process(request).await?.into_inner())
}
