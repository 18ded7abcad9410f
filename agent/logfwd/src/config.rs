//! The forwarder's configuration: a serde struct whose every field has a
//! documented default, so that a configuration file names only what it
//! changes.
//!
//! ```
//! let config: cocos_logfwd::Config = serde_json::from_str(
//!     r#"{ "buffer": { "max_bytes": 1048576 }, "upstream": { "cvm_id": "vm-1" } }"#,
//! ).unwrap();
//! assert_eq!(config.socket_path, std::path::Path::new("/run/cocos/log.sock"));
//! assert_eq!(config.buffer.max_bytes, 1 << 20);
//! assert_eq!(config.buffer.segment_bytes, 1 << 20);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::buffer::BufferLimits;
pub use crate::upstream::UpstreamConfig;

/// The forwarder's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where `log.LogCollector` listens. Default `/run/cocos/log.sock`
    /// (agent-api §1.1); `LOG_FORWARDER_SOCKET` overrides it in
    /// [`Config::from_env`].
    pub socket_path: PathBuf,
    /// Permission bits of the socket. Default `0o660` (owner and group).
    /// The Go forwarder used 0777; but the runner starts algorithms as an
    /// unprivileged user, and an algorithm must not be able to forge the
    /// agent's events.
    pub socket_mode: u32,
    /// Largest message accepted, in bytes of its buffer record (the
    /// encoded `AgentLog`/`AgentEvent` plus 17). Default 1 MiB; larger
    /// messages are refused with `INVALID_ARGUMENT`. (The client splits logs
    /// far below this, at 64 KiB.)
    pub max_message_bytes: usize,
    /// The disk buffer.
    pub buffer: BufferConfig,
    /// The management service.
    pub upstream: UpstreamConfig,
    /// Redialling and confirmation.
    pub delivery: DeliveryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket_path: "/run/cocos/log.sock".into(),
            socket_mode: 0o660,
            max_message_bytes: 1 << 20,
            buffer: BufferConfig::default(),
            upstream: UpstreamConfig::default(),
            delivery: DeliveryConfig::default(),
        }
    }
}

/// Where and how much to buffer (see [`crate::buffer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Directory of the segment files. Default `/cocos/log-buffer` (the
    /// VM's encrypted data disk; `/run` and `/tmp` are RAM).
    pub dir: PathBuf,
    /// Bound on the segment files' total size. Default 64 MiB. Past it the
    /// oldest logs are dropped; events are kept.
    pub max_bytes: u64,
    /// Size at which a new segment file is started, which is also how much
    /// is dropped at a time. Default 1 MiB.
    pub segment_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: "/cocos/log-buffer".into(),
            max_bytes: 64 << 20,
            segment_bytes: 1 << 20,
        }
    }
}

/// Redialling and when a sent message counts as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// First delay before redialling. Default 100 ms; doubled after each
    /// failure up to `redial_max_ms`.
    pub redial_initial_ms: u64,
    /// Cap of the redial delay. Default 5 s.
    pub redial_max_ms: u64,
    /// A message sent on a stream that then stays up this long counts as
    /// delivered and leaves the buffer; if the stream breaks sooner, it is
    /// sent again on the next one (at-least-once). Default 15 s: longer
    /// than the keepalive interval plus timeout (5 s + 5 s), within which a
    /// silently dead link is noticed.
    pub confirm_after_ms: u64,
    /// After this many streams in a row broke before anything on them was
    /// confirmed, the messages they carried count as delivered anyway, so
    /// that a service that keeps dropping the stream (or one message it
    /// cannot take) does not stop all delivery. Default 3; at least 1.
    pub max_replays: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            redial_initial_ms: 100,
            redial_max_ms: 5_000,
            confirm_after_ms: 15_000,
            max_replays: 3,
        }
    }
}

impl DeliveryConfig {
    pub(crate) fn confirm_after(&self) -> Duration {
        Duration::from_millis(self.confirm_after_ms)
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {field}: {problem}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: &'static str,
}

impl Config {
    /// The defaults, with the management service settings from the
    /// `AGENT_CVM_*` environment keys and the socket from
    /// `LOG_FORWARDER_SOCKET` (empty values ignored).
    pub fn from_env() -> Config {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`Config::from_env`] reading keys from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Config {
        let mut config = Config::default();
        if let Some(path) = lookup("LOG_FORWARDER_SOCKET").filter(|p| !p.is_empty()) {
            config.socket_path = path.into();
        }
        config.upstream.apply_env(lookup);
        config
    }

    /// Checks that sizes and delays make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem| Err(ConfigError { field, problem });
        if self.buffer.segment_bytes == 0 {
            return err("buffer.segment_bytes", "must be positive");
        }
        if self.buffer.max_bytes < self.buffer.segment_bytes {
            return err("buffer.max_bytes", "must be at least buffer.segment_bytes");
        }
        if self.max_message_bytes < 64 {
            return err("max_message_bytes", "must be at least 64");
        }
        if self.delivery.redial_initial_ms == 0 {
            return err("delivery.redial_initial_ms", "must be positive");
        }
        if self.delivery.max_replays == 0 {
            return err("delivery.max_replays", "must be at least 1");
        }
        if self.socket_mode > 0o777 {
            return err("socket_mode", "must be permission bits (at most 0o777)");
        }
        Ok(())
    }

    pub(crate) fn limits(&self) -> BufferLimits {
        BufferLimits {
            max_bytes: self.buffer.max_bytes,
            segment_bytes: self.buffer.segment_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_the_documented_defaults() {
        let c: Config = serde_json::from_str("{}").expect("parses");
        assert_eq!(c, Config::default());
        assert_eq!(c.socket_path, PathBuf::from("/run/cocos/log.sock"));
        assert_eq!(c.buffer.dir, PathBuf::from("/cocos/log-buffer"));
        assert_eq!(c.buffer.max_bytes, 67_108_864);
        assert_eq!(c.delivery.redial_initial_ms, 100);
        assert_eq!(c.upstream.url, "localhost:7001");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Config>(r#"{"buffer":{"max":1}}"#).is_err());
    }

    #[test]
    fn socket_from_the_environment() {
        let c =
            Config::from_lookup(|k| (k == "LOG_FORWARDER_SOCKET").then(|| "/tmp/x.sock".into()));
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x.sock"));
    }
}
