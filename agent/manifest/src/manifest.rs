//! The validated manifest, and its validation from either form.

use std::collections::HashMap;
use std::fmt;

use cocos_auth::{DeclaredKey, PublicKey, Role};
use cocos_proto::cvms;
use sha3::{Digest, Sha3_256};

use crate::hash::Sha3Digest;
use crate::json::{self, Computation, HashField, Kbs, Source};

/// The algorithm types the runner knows (agent-api.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgoType {
    /// A native executable (`bin`, the default when empty).
    Bin,
    /// A Python script (`python`).
    Python,
    /// A WebAssembly module run under WASI (`wasm`).
    Wasm,
    /// A `docker save` image archive (`docker`).
    Docker,
}

impl AlgoType {
    /// Parses the manifest's `algo_type`; empty means `bin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "bin" => Some(Self::Bin),
            "python" => Some(Self::Python),
            "wasm" => Some(Self::Wasm),
            "docker" => Some(Self::Docker),
            _ => None,
        }
    }

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bin => "bin",
            Self::Python => "python",
            Self::Wasm => "wasm",
            Self::Docker => "docker",
        }
    }
}

impl fmt::Display for AlgoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A declared key: its DER SubjectPublicKeyInfo as the manifest holds it,
/// and the parsed key.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKey {
    /// DER SubjectPublicKeyInfo.
    pub der: Vec<u8>,
    /// The parsed key.
    pub key: PublicKey,
}

/// A validated dataset declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// SHA3-256 of the dataset (of its deterministic zip for a directory).
    pub hash: Sha3Digest,
    /// The provider's key.
    pub user_key: UserKey,
    /// A plain file name, unique within the manifest.
    pub filename: String,
    /// Remote source, if any.
    pub source: Option<Source>,
    /// Extract the uploaded zip (remote mode).
    pub decompress: bool,
    /// KBS settings, if any.
    pub kbs: Option<Kbs>,
}

/// A validated algorithm declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Algorithm {
    /// SHA3-256 of the algorithm file.
    pub hash: Sha3Digest,
    /// The provider's key.
    pub user_key: UserKey,
    /// The type; `bin` when the manifest left it empty.
    pub algo_type: AlgoType,
    /// Arguments, in order.
    pub algo_args: Vec<String>,
    /// SHA3-256 of requirements.txt; `None` means an upload carrying
    /// requirements is refused.
    pub requirements_hash: Option<Sha3Digest>,
    /// Remote source, if any.
    pub source: Option<Source>,
    /// KBS settings, if any.
    pub kbs: Option<Kbs>,
}

/// The validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The computation id (1 to 1024 bytes).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Datasets, in manifest order.
    pub datasets: Vec<Dataset>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Result consumers' keys, in manifest order.
    pub result_consumers: Vec<UserKey>,
    /// The ingress settings (wire form only; not part of the JSON form).
    pub agent_config: Option<cvms::AgentConfig>,
}

/// One thing wrong with a manifest, naming the field with the JSON form's
/// names (`datasets[1].hash`, `algorithm.user_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The JSON form does not parse.
    #[error(transparent)]
    Json(#[from] json::JsonError),
    /// The wire bytes do not decode as `cvms.ComputationRunReq`.
    #[error("manifest does not decode as cvms.ComputationRunReq: {0}")]
    Wire(String),
    /// Fields that break the rules, every one of them.
    #[error("invalid manifest: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

/// SHA3-256 of the manifest JSON as Go re-marshals it: what
/// `cocos-cli checksum --manifest` prints, for the Go CLI and for us.
pub fn manifest_checksum(json_bytes: &[u8]) -> Result<Sha3Digest, json::JsonError> {
    let c = Computation::from_json(json_bytes)?;
    Ok(Sha3_256::digest(c.to_json()).into())
}

struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn hash(&mut self, field: &str, h: &HashField) -> Sha3Digest {
        match h.given {
            Some(32) => {}
            Some(n) => self.fail(field, format!("{n} bytes, expected 32 (SHA3-256)")),
            None => self.fail(field, "missing, expected 32 bytes (SHA3-256)"),
        }
        h.bytes
    }

    fn key(&mut self, field: &str, der: &[u8]) -> Option<UserKey> {
        if der.is_empty() {
            self.fail(field, "missing (DER SubjectPublicKeyInfo)");
            return None;
        }
        match PublicKey::from_spki_der(der) {
            Ok(key) => Some(UserKey {
                der: der.to_vec(),
                key,
            }),
            Err(e) => {
                self.fail(field, e.to_string());
                None
            }
        }
    }
}

/// Why `name` is not a plain file name, if it is not.
fn plain_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty, expected a plain file name")
    } else if name == "." || name == ".." {
        Some("`.` or `..`, expected a plain file name")
    } else if name.contains('/') {
        Some("contains `/`, expected a plain file name")
    } else if name.contains('\0') {
        Some("contains NUL, expected a plain file name")
    } else {
        None
    }
}

impl Manifest {
    /// Validates the JSON form (agent-api.md §2.2).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        Self::validate(&Computation::from_json(bytes)?, None)
    }

    /// Decodes and validates a proto-marshalled `cvms.ComputationRunReq`
    /// (as reassembled from `RunReqChunks`).
    pub fn from_wire_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        use cocos_proto::prost::Message;
        let req = cvms::ComputationRunReq::decode(bytes)
            .map_err(|e| ManifestError::Wire(e.to_string()))?;
        Self::from_wire(&req)
    }

    /// Validates the wire form (agent-api.md §2.1).
    pub fn from_wire(req: &cvms::ComputationRunReq) -> Result<Self, ManifestError> {
        Self::validate(&computation_from_wire(req), req.agent_config.clone())
    }

    /// Checks every rule and collects every failure:
    /// - `id` is 1 to 1024 bytes (signed requests carry it);
    /// - an algorithm is present; every `hash` is exactly 32 bytes, and so is
    ///   `requirements_hash` when present;
    /// - every `user_key` is DER SubjectPublicKeyInfo of RSA, ECDSA
    ///   P-256/P-384 or Ed25519;
    /// - dataset filenames are plain names (not empty, `.` or `..`, no `/`,
    ///   no NUL) and unique;
    /// - `algo_type` is empty, `bin`, `python`, `wasm` or `docker`.
    pub fn validate(
        c: &Computation,
        agent_config: Option<cvms::AgentConfig>,
    ) -> Result<Self, ManifestError> {
        let mut ck = Check { errors: Vec::new() };
        if c.id.is_empty() {
            ck.fail("id", "missing");
        } else if c.id.len() > cocos_auth::request::MAX_COMPUTATION_ID {
            ck.fail("id", format!("{} bytes, at most 1024", c.id.len()));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut datasets = Vec::new();
        for (i, d) in c.datasets.iter().enumerate() {
            let hash = ck.hash(&format!("datasets[{i}].hash"), &d.hash);
            let key = ck.key(&format!("datasets[{i}].user_key"), &d.user_key);
            let field = format!("datasets[{i}].filename");
            if let Some(problem) = plain_name_problem(&d.filename) {
                ck.fail(&field, format!("{:?}: {problem}", d.filename));
            } else if let Some(first) = seen.get(d.filename.as_str()) {
                ck.fail(
                    &field,
                    format!("{:?} is also datasets[{first}]'s", d.filename),
                );
            } else {
                seen.insert(&d.filename, i);
            }
            if let Some(user_key) = key {
                datasets.push(Dataset {
                    hash,
                    user_key,
                    filename: d.filename.clone(),
                    source: d.source.clone(),
                    decompress: d.decompress,
                    kbs: d.kbs.clone(),
                });
            }
        }
        let algorithm = match &c.algorithm {
            None => {
                ck.fail(
                    "algorithm",
                    "missing (a manifest must declare the algorithm)",
                );
                None
            }
            Some(a) => {
                let hash = ck.hash("algorithm.hash", &a.hash);
                let key = ck.key("algorithm.user_key", &a.user_key);
                let requirements_hash = a
                    .requirements_hash
                    .as_ref()
                    .map(|r| ck.hash("algorithm.requirements_hash", r));
                let algo_type = AlgoType::parse(&a.algo_type);
                if algo_type.is_none() {
                    ck.fail(
                        "algorithm.algo_type",
                        format!("{:?} is not one of bin, python, wasm, docker", a.algo_type),
                    );
                }
                match (key, algo_type) {
                    (Some(user_key), Some(algo_type)) => Some(Algorithm {
                        hash,
                        user_key,
                        algo_type,
                        algo_args: a.algo_args.clone(),
                        requirements_hash,
                        source: a.source.clone(),
                        kbs: a.kbs.clone(),
                    }),
                    _ => None,
                }
            }
        };
        let mut consumers = Vec::new();
        for (i, r) in c.result_consumers.iter().enumerate() {
            if let Some(k) = ck.key(&format!("result_consumers[{i}].user_key"), &r.user_key) {
                consumers.push(k);
            }
        }
        match algorithm {
            Some(algorithm) if ck.errors.is_empty() => Ok(Manifest {
                id: c.id.clone(),
                name: c.name.clone(),
                description: c.description.clone(),
                datasets,
                algorithm,
                result_consumers: consumers,
                agent_config,
            }),
            _ => Err(ManifestError::Invalid(ck.errors)),
        }
    }

    /// The JSON form of this manifest.
    pub fn to_computation(&self) -> Computation {
        Computation {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            datasets: self
                .datasets
                .iter()
                .map(|d| json::Dataset {
                    hash: HashField::new(d.hash),
                    user_key: d.user_key.der.clone(),
                    filename: d.filename.clone(),
                    source: d.source.clone(),
                    decompress: d.decompress,
                    kbs: d.kbs.clone(),
                })
                .collect(),
            algorithm: Some(json::Algorithm {
                hash: HashField::new(self.algorithm.hash),
                user_key: self.algorithm.user_key.der.clone(),
                source: self.algorithm.source.clone(),
                // Go keeps the string as given; we write the canonical name.
                algo_type: self.algorithm.algo_type.as_str().to_string(),
                algo_args: self.algorithm.algo_args.clone(),
                kbs: self.algorithm.kbs.clone(),
                requirements_hash: self.algorithm.requirements_hash.map(HashField::new),
            }),
            result_consumers: self
                .result_consumers
                .iter()
                .map(|k| json::ResultConsumer {
                    user_key: k.der.clone(),
                })
                .collect(),
        }
    }

    /// Every declared key with its role, for [`cocos_auth::Verifier`].
    pub fn declared_keys(&self) -> Vec<DeclaredKey> {
        let mut keys = vec![DeclaredKey {
            role: Role::AlgorithmProvider,
            key: self.algorithm.user_key.key.clone(),
        }];
        keys.extend(self.datasets.iter().map(|d| DeclaredKey {
            role: Role::DataProvider {
                dataset: d.filename.clone(),
            },
            key: d.user_key.key.clone(),
        }));
        keys.extend(
            self.result_consumers
                .iter()
                .enumerate()
                .map(|(index, k)| DeclaredKey {
                    role: Role::Consumer { index },
                    key: k.key.clone(),
                }),
        );
        keys
    }
}

fn source_from_wire(s: &Option<cvms::Source>) -> Option<Source> {
    s.as_ref().map(|s| Source {
        r#type: s.r#type.clone(),
        url: s.url.clone(),
        kbs_resource_path: s.kbs_resource_path.clone(),
        encrypted: s.encrypted,
    })
}

fn kbs_from_wire(k: &Option<cvms::KbsConfig>) -> Option<Kbs> {
    k.as_ref().map(|k| Kbs {
        url: k.url.clone(),
        enabled: k.enabled,
    })
}

/// The wire message in the JSON form's shape, keeping each hash's length
/// for validation. An empty `requirements_hash` is absent (proto3 bytes
/// have no presence).
fn computation_from_wire(req: &cvms::ComputationRunReq) -> Computation {
    Computation {
        id: req.id.clone(),
        name: req.name.clone(),
        description: req.description.clone(),
        datasets: req
            .datasets
            .iter()
            .map(|d| json::Dataset {
                hash: HashField::from_slice(&d.hash),
                user_key: d.user_key.clone(),
                filename: d.filename.clone(),
                source: source_from_wire(&d.source),
                decompress: d.decompress,
                kbs: kbs_from_wire(&d.kbs),
            })
            .collect(),
        algorithm: req.algorithm.as_ref().map(|a| json::Algorithm {
            hash: HashField::from_slice(&a.hash),
            user_key: a.user_key.clone(),
            source: source_from_wire(&a.source),
            algo_type: a.algo_type.clone(),
            algo_args: a.algo_args.clone(),
            kbs: kbs_from_wire(&a.kbs),
            requirements_hash: (!a.requirements_hash.is_empty())
                .then(|| HashField::from_slice(&a.requirements_hash)),
        }),
        result_consumers: req
            .result_consumers
            .iter()
            .map(|r| json::ResultConsumer {
                user_key: r.user_key.clone(),
            })
            .collect(),
    }
}
