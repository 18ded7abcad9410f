//! Why an `AgentService` call is refused, and the gRPC status each reason
//! becomes. The texts of agent-api.md §3 are kept where that table has
//! one, so that existing clients recognise them.

use cocos_auth::AuthError;
use tonic::{Code, Status};

/// Text of [`ServiceError::WrongState`] (agent-api.md §3).
pub const WRONG_STATE: &str = "agent not expecting this operation in the current state";
/// Text of [`ServiceError::HashMismatch`].
pub const HASH_MISMATCH: &str = "malformed data, hash does not match manifest";
/// Text of [`ServiceError::UndeclaredDataset`].
pub const UNDECLARED_DATASET: &str = "dataset not declared in computation manifest";
/// Text of [`ServiceError::ResultsNotReady`].
pub const RESULTS_NOT_READY: &str = "computation results are not yet ready";
/// Text of [`ServiceError::NotConsumer`].
pub const UNDECLARED_CONSUMER: &str = "result consumer is undeclared in computation manifest";

/// A refused call; [`Status::from`] gives its code and text.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The call does not fit the state (FAILED_PRECONDITION).
    #[error("{WRONG_STATE}")]
    WrongState,
    /// Authentication failed (UNAUTHENTICATED, the auth error's text).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The streamed or signed hash is not the manifest's (INVALID_ARGUMENT).
    #[error("{HASH_MISMATCH}")]
    HashMismatch,
    /// requirements.txt's hash is not the manifest's (INVALID_ARGUMENT).
    #[error("malformed data, requirements hash does not match manifest")]
    RequirementsHashMismatch,
    /// Requirements uploaded, none declared (FAILED_PRECONDITION).
    #[error("requirements refused: the manifest declares no requirements_hash for the algorithm")]
    RequirementsNotDeclared,
    /// Requirements declared, none uploaded (INVALID_ARGUMENT).
    #[error("the manifest declares requirements_hash but the upload carries no requirements")]
    RequirementsMissing,
    /// The signature does not cover the uploaded requirements
    /// (UNAUTHENTICATED).
    #[error("requirements.txt SHA3-256 is not the one the request signed")]
    RequirementsNotSigned,
    /// The dataset's name is not in the manifest (INVALID_ARGUMENT).
    #[error("{UNDECLARED_DATASET}: {0:?}")]
    UndeclaredDataset(String),
    /// The dataset was accepted already (FAILED_PRECONDITION).
    #[error("dataset {0:?} was already received")]
    DatasetAlreadyReceived(String),
    /// An upload over its cap (RESOURCE_EXHAUSTED).
    #[error("{what} upload exceeds the configured cap of {cap} bytes")]
    TooLarge {
        /// What was uploaded.
        what: &'static str,
        /// The cap.
        cap: u64,
    },
    /// A required part of the request is missing or malformed
    /// (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// Extraction of a decompressed dataset was refused (INVALID_ARGUMENT).
    #[error("error decompressing dataset: {0}")]
    Decompress(#[from] cocos_manifest::zip::ExtractError),
    /// `Result` before the run finished (FAILED_PRECONDITION).
    #[error("{RESULTS_NOT_READY}")]
    ResultsNotReady,
    /// `Result` after a failed run: the run's error (FAILED_PRECONDITION).
    #[error("{0}")]
    RunFailed(String),
    /// `Result` by a key that is not a consumer's (UNAUTHENTICATED).
    #[error("{UNDECLARED_CONSUMER}")]
    NotConsumer,
    /// The computation was stopped while the call was in progress (ABORTED).
    #[error("the computation was stopped while this call was in progress")]
    Stopped,
    /// The client's stream failed (its status, as received).
    #[error("upload stream broke: {}", .0.message())]
    Stream(Status),
    /// A local failure (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            Self::WrongState
            | Self::RequirementsNotDeclared
            | Self::DatasetAlreadyReceived(_)
            | Self::ResultsNotReady
            | Self::RunFailed(_) => Code::FailedPrecondition,
            Self::Auth(_) | Self::NotConsumer | Self::RequirementsNotSigned => {
                Code::Unauthenticated
            }
            Self::HashMismatch
            | Self::RequirementsHashMismatch
            | Self::RequirementsMissing
            | Self::UndeclaredDataset(_)
            | Self::InvalidArgument(_)
            | Self::Decompress(_) => Code::InvalidArgument,
            Self::TooLarge { .. } => Code::ResourceExhausted,
            Self::Stopped => Code::Aborted,
            Self::Stream(s) => s.code(),
            Self::Internal(_) => Code::Internal,
        }
    }

    /// A local I/O failure, with what was being done.
    pub fn io(doing: &str, e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{doing}: {e}"))
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
