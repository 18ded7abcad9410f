//! `agent.AgentService` over the [`Agent`]: metadata, streaming uploads to
//! disk, the result download, and the attestation seam.
//!
//! Order of checks for an upload: authentication (the signature, its
//! freshness, its nonce, the role of the key), then the state and the
//! manifest (declared, pending, the signed hash equal to the manifest's),
//! then the bytes as they stream (cap), then their hash (the manifest's,
//! and the signed one), then — for a decompressed dataset — extraction,
//! and only then the move into place. Any failure before the move leaves
//! the state and every accepted file as they were, and removes what was
//! written.

use std::pin::Pin;
use std::task::{Context, Poll};

use cocos_auth::{AuthMetadata, Authorization, Rpc};
use cocos_manifest::AlgoType;
use cocos_proto::agent::agent_service_server::AgentService;
use cocos_proto::agent::{
    AlgoRequest, AlgoResponse, AttestationRequest, AttestationResponse, AttestationTokenRequest,
    AttestationTokenResponse, DataRequest, DataResponse, ImaMeasurementsRequest,
    ImaMeasurementsResponse, ResultRequest, ResultResponse,
};
use futures::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::{AcceptedAlgorithm, Agent, StagedDataset, Ticket};
use crate::error::ServiceError;
use crate::peers::NO_ATTESTATION_PROVIDER;
use crate::state::State;
use crate::upload::Spool;

/// Bytes per `ResultResponse` (and attestation) chunk, as the Go agent
/// sends them.
pub const CHUNK: usize = 1 << 20;
/// Response header with the download's size in decimal, which the Go CLI
/// requires.
pub const FILE_SIZE_HEADER: &str = "file-size";

/// The gRPC face of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentGrpc {
    agent: Agent,
}

impl AgentGrpc {
    /// The service for `agent`.
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }
}

fn auth_metadata(md: &MetadataMap) -> AuthMetadata {
    let all = |key: &str| -> Vec<String> {
        md.get_all(key)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
            .collect()
    };
    AuthMetadata {
        cocos_auth: all(cocos_auth::AUTH_METADATA),
        signature: all(cocos_auth::LEGACY_SIGNATURE_METADATA),
    }
}

fn metadata_str(md: &MetadataMap, key: &str) -> Result<Option<String>, ServiceError> {
    md.get(key)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ServiceError::InvalidArgument(format!("{key} metadata is not text")))
        })
        .transpose()
}

/// The algorithm's type and arguments: the manifest's unless it leaves
/// them open. The manifest cannot tell `bin` from "not said" (an empty
/// `algo_type` means `bin`), and the CLIs send `algo_type=bin` by default,
/// so `bin` on either side gives way to the other; two different types
/// other than `bin` are refused. An unknown `algo_type` is refused (the Go
/// proto's "binary" included, as the runner refuses it). `algo_args` in
/// the metadata are used when the manifest declares none, and must equal
/// them otherwise.
fn resolve_algorithm(
    md: &MetadataMap,
    declared_type: AlgoType,
    declared_args: &[String],
) -> Result<(AlgoType, Vec<String>), ServiceError> {
    let algo_type = match metadata_str(md, "algo_type")? {
        None => declared_type,
        Some(t) => {
            let t = AlgoType::parse(&t).ok_or_else(|| {
                ServiceError::InvalidArgument(format!("unsupported algorithm type: {t}"))
            })?;
            match (declared_type, t) {
                (AlgoType::Bin, t) => t,
                (declared, AlgoType::Bin) => declared,
                (declared, t) if declared == t => t,
                (declared, t) => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "algo_type {t} differs from the manifest's {declared}"
                    )));
                }
            }
        }
    };
    let mut args = Vec::new();
    for v in md.get_all("algo_args").iter() {
        args.push(
            v.to_str()
                .map_err(|_| {
                    ServiceError::InvalidArgument("algo_args metadata is not text".into())
                })?
                .to_string(),
        );
    }
    let args = if declared_args.is_empty() {
        args
    } else if args.is_empty() || args == declared_args {
        declared_args.to_vec()
    } else {
        return Err(ServiceError::InvalidArgument(
            "algo_args differ from the manifest's arguments".into(),
        ));
    };
    Ok((algo_type, args))
}

fn stream_error(s: Status) -> ServiceError {
    ServiceError::Stream(s)
}

impl AgentGrpc {
    async fn algo_inner(
        &self,
        request: Request<Streaming<AlgoRequest>>,
    ) -> Result<(), ServiceError> {
        let agent = &self.agent;
        let ticket = agent.authorize(Rpc::Algo, &auth_metadata(request.metadata()))?;
        agent.check_state(&ticket, State::ReceivingAlgorithm)?;
        let declared = &ticket.manifest.algorithm;
        // A signed hash other than the manifest's: refuse before any byte.
        if ticket.signed_payload().is_some_and(|h| h != declared.hash) {
            return Err(ServiceError::HashMismatch);
        }
        let signed_requirements = match &ticket.auth {
            Authorization::Signed { request, .. } => Some(request.requirements_sha3),
            Authorization::Legacy { .. } => None,
        };
        if let Some(Some(r)) = signed_requirements {
            match declared.requirements_hash {
                None => return Err(ServiceError::RequirementsNotDeclared),
                Some(d) if d != r => return Err(ServiceError::RequirementsHashMismatch),
                Some(_) => {}
            }
        }
        let (algo_type, args) =
            resolve_algorithm(request.metadata(), declared.algo_type, &declared.algo_args)?;

        let caps = agent.config().caps;
        let staging = agent.work_dir().staging();
        let mut algorithm = Spool::create(&staging, "algorithm", caps.algorithm_bytes)?;
        let mut requirements: Option<Spool> = None;
        let mut stream = request.into_inner();
        while let Some(msg) = stream.message().await.map_err(stream_error)? {
            if !msg.requirements.is_empty() {
                if declared.requirements_hash.is_none() {
                    return Err(ServiceError::RequirementsNotDeclared);
                }
                let spool = match requirements.as_mut() {
                    Some(s) => s,
                    None => requirements.insert(Spool::create(
                        &staging,
                        "requirements",
                        caps.requirements_bytes,
                    )?),
                };
                spool.write(msg.requirements).await?;
            }
            algorithm.write(msg.algorithm).await?;
        }
        if algorithm.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "algorithm binary is required".into(),
            ));
        }
        let algorithm = algorithm.finish().await?;
        if algorithm.sha3 != declared.hash {
            return Err(ServiceError::HashMismatch);
        }
        ticket.auth.check_payload(&algorithm.sha3)?;
        let requirements = match requirements {
            Some(s) => Some(s.finish().await?),
            None => None,
        };
        match (&requirements, declared.requirements_hash) {
            (None, Some(_)) => return Err(ServiceError::RequirementsMissing),
            (Some(_), None) => return Err(ServiceError::RequirementsNotDeclared),
            (Some(r), Some(d)) if r.sha3 != d => {
                return Err(ServiceError::RequirementsHashMismatch);
            }
            _ => {}
        }
        if let Some(signed) = signed_requirements
            && signed != requirements.as_ref().map(|r| r.sha3)
        {
            return Err(ServiceError::RequirementsNotSigned);
        }
        let accepted = AcceptedAlgorithm {
            algo_type,
            args,
            requirements: requirements.is_some(),
        };
        agent.commit_algorithm(&ticket, algorithm, requirements, accepted)
    }

    async fn data_inner(
        &self,
        request: Request<Streaming<DataRequest>>,
    ) -> Result<(), ServiceError> {
        let agent = &self.agent;
        let ticket = agent.authorize(Rpc::Data, &auth_metadata(request.metadata()))?;
        let decompress_md =
            metadata_str(request.metadata(), "decompress")?.as_deref() == Some("true");
        // The dataset's name: what the request signed, or (legacy) the
        // first filename in the stream.
        let mut name: Option<String> = ticket.signed_resource().map(str::to_string);
        if let Some(n) = &name {
            self.accept_dataset_name(&ticket, n)?;
        } else {
            agent.check_state(&ticket, State::ReceivingData)?;
        }
        let caps = agent.config().caps;
        let staging = agent.work_dir().staging();
        let mut spool = Spool::create(&staging, "dataset", caps.dataset_bytes)?;
        let mut stream = request.into_inner();
        while let Some(msg) = stream.message().await.map_err(stream_error)? {
            if !msg.filename.is_empty() {
                match &name {
                    None => {
                        self.accept_dataset_name(&ticket, &msg.filename)?;
                        name = Some(msg.filename);
                    }
                    Some(n) if *n != msg.filename => {
                        // A signed request names its dataset: another
                        // filename is not authorised (legacy uploads keep
                        // the first name).
                        ticket.auth.check_dataset(&msg.filename)?;
                        return Err(ServiceError::InvalidArgument(format!(
                            "dataset filename changed from {n:?} to {:?} within one upload",
                            msg.filename
                        )));
                    }
                    Some(_) => {}
                }
            }
            spool.write(msg.dataset).await?;
        }
        let name =
            name.ok_or_else(|| ServiceError::InvalidArgument("filename is required".into()))?;
        if spool.is_empty() {
            return Err(ServiceError::InvalidArgument("dataset is required".into()));
        }
        let declared = ticket
            .manifest
            .datasets
            .iter()
            .find(|d| d.filename == name)
            .ok_or_else(|| ServiceError::UndeclaredDataset(name.clone()))?;
        let spooled = spool.finish().await?;
        if spooled.sha3 != declared.hash {
            return Err(ServiceError::HashMismatch);
        }
        ticket.auth.check_payload(&spooled.sha3)?;
        let staged = if decompress_md || declared.decompress {
            let limits = caps.extract_limits();
            let extracted = tokio::task::spawn_blocking(move || {
                let dir = tempfile::Builder::new()
                    .prefix("extract-")
                    .tempdir_in(&staging)
                    .map_err(|e| ServiceError::io("creating the extraction directory", e))?;
                let zip = spooled
                    .file
                    .reopen()
                    .map_err(|e| ServiceError::io("reading the uploaded zip", e))?;
                cocos_manifest::zip::extract(
                    std::io::BufReader::new(zip),
                    &dir.path().join("d"),
                    &limits,
                )?;
                Ok::<_, ServiceError>(dir)
            })
            .await
            .map_err(|e| ServiceError::io("extraction task", e))??;
            StagedDataset::Extracted { dir: extracted }
        } else {
            StagedDataset::File(spooled)
        };
        agent.commit_dataset(&ticket, &name, staged)
    }

    fn accept_dataset_name(&self, ticket: &Ticket, name: &str) -> Result<(), ServiceError> {
        self.agent.check_dataset(ticket, name)?;
        let declared = ticket.manifest.datasets.iter().find(|d| d.filename == name);
        if let (Some(d), Some(signed)) = (declared, ticket.signed_payload())
            && signed != d.hash
        {
            return Err(ServiceError::HashMismatch);
        }
        Ok(())
    }
}

/// A result stream that reports when it has handed its last chunk to the
/// transport: only then does the consumer count as having fetched it.
pub struct Download {
    inner: ReceiverStream<Result<ResultResponse, Status>>,
    failed: bool,
    on_complete: Option<Box<dyn FnOnce() + Send>>,
}

impl Stream for Download {
    type Item = Result<ResultResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.inner).poll_next(cx);
        match &item {
            Poll::Ready(Some(Err(_))) => self.failed = true,
            Poll::Ready(None) if !self.failed => {
                if let Some(f) = self.on_complete.take() {
                    f();
                }
            }
            _ => {}
        }
        item
    }
}

/// Streams `bytes` in [`CHUNK`]s as `make(chunk)`, with the `file-size`
/// header.
fn chunked<T, S>(bytes: Vec<u8>, make: impl Fn(Vec<u8>) -> T) -> Result<Response<S>, Status>
where
    S: From<Vec<Result<T, Status>>>,
{
    let size = bytes.len();
    let items: Vec<Result<T, Status>> = bytes.chunks(CHUNK).map(|c| Ok(make(c.to_vec()))).collect();
    let mut response = Response::new(S::from(items));
    insert_size(response.metadata_mut(), size as u64)?;
    Ok(response)
}

fn insert_size(md: &mut MetadataMap, size: u64) -> Result<(), Status> {
    let v = size
        .to_string()
        .parse()
        .map_err(|_| Status::internal("file-size header"))?;
    md.insert(FILE_SIZE_HEADER, v);
    Ok(())
}

/// A finite stream of ready items.
pub struct Items<T>(std::vec::IntoIter<T>);

impl<T> From<Vec<T>> for Items<T> {
    fn from(v: Vec<T>) -> Self {
        Self(v.into_iter())
    }
}

impl<T: Unpin> Stream for Items<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
        Poll::Ready(self.0.next())
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn algo(
        &self,
        request: Request<Streaming<AlgoRequest>>,
    ) -> Result<Response<AlgoResponse>, Status> {
        match self.algo_inner(request).await {
            Ok(()) => Ok(Response::new(AlgoResponse {})),
            Err(e) => {
                tracing::warn!(error = %e, "Algo refused");
                Err(e.into())
            }
        }
    }

    async fn data(
        &self,
        request: Request<Streaming<DataRequest>>,
    ) -> Result<Response<DataResponse>, Status> {
        match self.data_inner(request).await {
            Ok(()) => Ok(Response::new(DataResponse {})),
            Err(e) => {
                tracing::warn!(error = %e, "Data refused");
                Err(e.into())
            }
        }
    }

    type ResultStream = Download;

    async fn result(
        &self,
        request: Request<ResultRequest>,
    ) -> Result<Response<Self::ResultStream>, Status> {
        let agent = &self.agent;
        let opened = agent
            .authorize(Rpc::Result, &auth_metadata(request.metadata()))
            .and_then(|ticket| agent.open_result(&ticket));
        let result = match opened {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Result refused");
                return Err(e.into());
            }
        };
        let mut file = tokio::fs::File::open(&result.path)
            .await
            .map_err(|e| Status::internal(format!("opening the results: {e}")))?;
        let (tx, rx) = mpsc::channel(2);
        let size = result.size;
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let mut buf = Vec::with_capacity(CHUNK);
                match (&mut file).take(CHUNK as u64).read_to_end(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        sent += n as u64;
                        if tx.send(Ok(ResultResponse { file: buf })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the results: {e}"))))
                            .await;
                        return;
                    }
                }
            }
            if sent != size {
                let _ = tx
                    .send(Err(Status::internal(format!(
                        "results are {sent} bytes, {size} announced"
                    ))))
                    .await;
            }
        });
        let done = agent.clone();
        let (generation, consumers) = (result.generation, result.consumers.clone());
        let mut response = Response::new(Download {
            inner: ReceiverStream::new(rx),
            failed: false,
            on_complete: Some(Box::new(move || {
                done.result_fetched(generation, &consumers)
            })),
        });
        insert_size(response.metadata_mut(), size)?;
        Ok(response)
    }

    type AttestationStream = Items<Result<AttestationResponse, Status>>;

    async fn attestation(
        &self,
        request: Request<AttestationRequest>,
    ) -> Result<Response<Self::AttestationStream>, Status> {
        let provider = self
            .agent
            .attestation()
            .ok_or_else(|| Status::failed_precondition(NO_ATTESTATION_PROVIDER))?;
        let req = request.into_inner();
        if req.tee_nonce.len() > 64 {
            return Err(Status::invalid_argument(
                "malformed report data, expect less or equal to 64 bytes",
            ));
        }
        if req.vtpm_nonce.len() > 32 {
            return Err(Status::invalid_argument(
                "malformed vTPM nonce, expect less or equal to 32 bytes",
            ));
        }
        let evidence = provider.attestation(req).await?;
        chunked(evidence, |file| AttestationResponse { file })
    }

    type IMAMeasurementsStream = Items<Result<ImaMeasurementsResponse, Status>>;

    async fn ima_measurements(
        &self,
        _request: Request<ImaMeasurementsRequest>,
    ) -> Result<Response<Self::IMAMeasurementsStream>, Status> {
        let provider = self
            .agent
            .attestation()
            .ok_or_else(|| Status::failed_precondition(NO_ATTESTATION_PROVIDER))?;
        let (list, pcr10) = provider.ima_measurements().await?;
        // PCR10 in every chunk (agent-api.md §3: the Go CLI reads it from
        // each one).
        chunked(list, move |file| ImaMeasurementsResponse {
            file,
            pcr10: pcr10.clone(),
        })
    }

    async fn azure_attestation_token(
        &self,
        request: Request<AttestationTokenRequest>,
    ) -> Result<Response<AttestationTokenResponse>, Status> {
        let provider = self
            .agent
            .attestation()
            .ok_or_else(|| Status::failed_precondition(NO_ATTESTATION_PROVIDER))?;
        let req = request.into_inner();
        if req.token_nonce.len() > 32 {
            return Err(Status::invalid_argument(
                "malformed token nonce, expect less or equal to 32 bytes",
            ));
        }
        let file = provider.azure_token(req).await?;
        Ok(Response::new(AttestationTokenResponse { file }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn algorithm_type_and_arguments() {
        use AlgoType::*;
        let r = |pairs: &[(&'static str, &str)], t, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            resolve_algorithm(&md(pairs), t, &args)
        };
        // Nothing said anywhere: bin.
        assert_eq!(r(&[], Bin, &[]).unwrap(), (Bin, vec![]));
        assert_eq!(r(&[("algo_type", "wasm")], Bin, &[]).unwrap().0, Wasm);
        assert_eq!(r(&[("algo_type", "bin")], Python, &[]).unwrap().0, Python);
        assert_eq!(
            r(&[("algo_type", "python")], Python, &[]).unwrap().0,
            Python
        );
        assert!(r(&[("algo_type", "docker")], Python, &[]).is_err());
        let e = r(&[("algo_type", "binary")], Bin, &[]).unwrap_err();
        assert_eq!(e.to_string(), "unsupported algorithm type: binary");
        // Arguments keep their order; the manifest's win when it has some.
        let (_, a) = r(
            &[
                ("algo_args", "-x"),
                ("algo_args", "2"),
                ("algo_args", "a b"),
            ],
            Bin,
            &[],
        )
        .unwrap();
        assert_eq!(a, ["-x", "2", "a b"]);
        assert_eq!(r(&[], Bin, &["m"]).unwrap().1, ["m"]);
        assert_eq!(r(&[("algo_args", "m")], Bin, &["m"]).unwrap().1, ["m"]);
        assert!(r(&[("algo_args", "other")], Bin, &["m"]).is_err());
    }
}
