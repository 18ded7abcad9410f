//! How a networked command fails: each failure is one line on stderr and
//! an exit status (documented in `--help`).
//!
//! | status | failure |
//! | --- | --- |
//! | 1 | the agent answered with an error (refused the signature, wrong state, hash mismatch, ...), broke the protocol, or a local check against `--manifest` failed |
//! | 2 | bad arguments or unreadable files (not made here: any other error) |
//! | 3 | the agent could not be reached: connection refused, TLS handshake failed, `UNAVAILABLE`, timeout |

use std::error::Error as StdError;
use std::fmt::Write as _;

use tonic::{Code, Status};

/// Exit status for an agent that answered with an error.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status for an agent that could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a networked command failed, once the request is made.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The agent could not be reached (exit status 3).
    #[error("agent unavailable at {addr}: {cause}")]
    Unreachable {
        /// The URL dialled.
        addr: String,
        /// What went wrong, with its causes.
        cause: String,
    },
    /// The agent did not answer in time (exit status 3).
    #[error("the agent at {addr} did not answer in time: {cause}")]
    Timeout {
        /// The URL dialled.
        addr: String,
        /// What went wrong.
        cause: String,
    },
    /// The agent answered with a gRPC error (exit status 1).
    #[error("{what}: {message}")]
    Refused {
        /// What the status code means, in words.
        what: &'static str,
        /// The agent's message.
        message: String,
    },
    /// The agent broke the protocol, e.g. sent more bytes than announced
    /// (exit status 1).
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    /// A check against the manifest given with `--manifest` failed before
    /// anything was sent (exit status 1).
    #[error("{0}")]
    Manifest(String),
}

impl Failure {
    /// The process exit status for this failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Failure::Unreachable { .. } | Failure::Timeout { .. } => EXIT_UNREACHABLE,
            Failure::Refused { .. } | Failure::Protocol(_) | Failure::Manifest(_) => EXIT_REFUSED,
        }
    }

    /// The failure a gRPC status from (or on the way to) the agent at
    /// `addr` stands for.
    pub fn from_status(status: &Status, addr: &str) -> Self {
        let message = status_text(status);
        // A status with an underlying error was made on this side from a
        // broken connection (e.g. an agent that closes the TLS session
        // because it wants a client certificate), not sent by the agent.
        let broken = StdError::source(status).is_some();
        let what = match status.code() {
            Code::Cancelled | Code::Unknown if broken => {
                return Failure::Unreachable {
                    addr: addr.to_string(),
                    cause: message,
                };
            }
            Code::Unavailable => {
                return Failure::Unreachable {
                    addr: addr.to_string(),
                    cause: message,
                };
            }
            Code::DeadlineExceeded => {
                return Failure::Timeout {
                    addr: addr.to_string(),
                    cause: message,
                };
            }
            Code::Unauthenticated => "the agent refused the signature",
            Code::PermissionDenied => "the agent denied permission",
            Code::FailedPrecondition => "the agent is not in the right state",
            Code::InvalidArgument => "the agent rejected the request",
            Code::NotFound => "the agent does not know what was asked for",
            Code::AlreadyExists => "the agent already has it",
            Code::ResourceExhausted => "the agent refused the size",
            Code::Unimplemented => "the agent does not implement this call",
            Code::Aborted => "the agent aborted the call",
            Code::OutOfRange => "the agent refused a value out of range",
            Code::Cancelled => "the call was cancelled",
            Code::Internal | Code::DataLoss => "the agent failed",
            // The Go agent's service errors ("malformed data, hash does not
            // match manifest", ...) arrive as UNKNOWN.
            Code::Unknown | Code::Ok => "the agent refused the request",
        };
        Failure::Refused { what, message }
    }

    /// The failure for a transport error while connecting to `addr`.
    pub fn unreachable(addr: &str, err: &(dyn StdError + 'static)) -> Self {
        Failure::Unreachable {
            addr: addr.to_string(),
            cause: one_line(&error_chain(err)),
        }
    }
}

/// A status's message followed by its underlying causes (the transport
/// error behind an `UNAVAILABLE`, ...), each named once, on one line.
fn status_text(status: &Status) -> String {
    let mut text = status.message().to_string();
    if let Some(source) = StdError::source(status) {
        let chain = error_chain(source);
        if !chain.is_empty() && !text.contains(&chain) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&chain);
        }
    }
    if text.is_empty() {
        text = format!("{:?} with no message", status.code());
    }
    one_line(&text)
}

/// `err: cause: cause ...`, leaving out a cause already contained in the
/// text so far (transport errors often repeat their source).
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !s.is_empty() && !out.contains(&s) {
            let _ = write!(out, ": {s}");
        }
        next = e.source();
    }
    out
}

/// Text from the agent, made safe for one terminal line: control
/// characters (newlines, escapes) are shown escaped, never interpreted.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_is_a_refusal_with_exit_status_1() {
        let f = Failure::from_status(
            &Status::unauthenticated("signature verification failed"),
            "https://h:7002",
        );
        assert_eq!(f.exit_status(), 1);
        assert_eq!(
            f.to_string(),
            "the agent refused the signature: signature verification failed"
        );
    }

    #[test]
    fn unavailable_is_unreachable_with_exit_status_3() {
        let f = Failure::from_status(&Status::unavailable("tcp connect error"), "http://h:1");
        assert_eq!(f.exit_status(), 3);
        assert_eq!(
            f.to_string(),
            "agent unavailable at http://h:1: tcp connect error"
        );
    }

    #[test]
    fn control_characters_from_the_agent_are_escaped() {
        assert_eq!(one_line("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
    }
}
