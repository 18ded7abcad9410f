//! Where the computation management service is and how to reach it: the
//! `AGENT_CVM_GRPC_*` environment of agent-api.md §1.3, or the same
//! settings built in code.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `AGENT_CVM_GRPC_URL`: the service's address (`host:port`, or a URL with
/// an `http`/`https` scheme).
pub const ENV_URL: &str = "AGENT_CVM_GRPC_URL";
/// `AGENT_CVM_GRPC_CLIENT_CERT`: PEM certificate for mTLS (with the key).
pub const ENV_CLIENT_CERT: &str = "AGENT_CVM_GRPC_CLIENT_CERT";
/// `AGENT_CVM_GRPC_CLIENT_KEY`: PEM private key for mTLS (with the cert).
pub const ENV_CLIENT_KEY: &str = "AGENT_CVM_GRPC_CLIENT_KEY";
/// `AGENT_CVM_GRPC_SERVER_CA_CERTS`: PEM CA bundle; turns TLS on.
pub const ENV_SERVER_CA_CERTS: &str = "AGENT_CVM_GRPC_SERVER_CA_CERTS";
/// `AGENT_CVM_ID`: this VM's id, sent as `job-id` metadata.
pub const ENV_CVM_ID: &str = "AGENT_CVM_ID";
/// `AGENT_CVM_GRPC_TIMEOUT`: dial timeout (Go duration syntax `60s`, `2m`,
/// `500ms`, or plain seconds). The Go agent parses it and never uses it;
/// here it bounds each dial.
pub const ENV_TIMEOUT: &str = "AGENT_CVM_GRPC_TIMEOUT";

/// How to reach the computation management service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CvmsSettings {
    /// `host:port` (the scheme follows the TLS settings), or a URL with an
    /// explicit `http://` or `https://`. Default `localhost:7001`.
    pub url: String,
    /// PEM client certificate (mTLS); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM client private key (mTLS); needs `client_cert`.
    pub client_key: Option<PathBuf>,
    /// PEM CA certificates that sign the service's certificate. Setting it
    /// (or a client identity) turns TLS on; without it, TLS trusts the
    /// system roots.
    pub server_ca_certs: Option<PathBuf>,
    /// This VM's id, sent as `job-id` metadata on every stream.
    pub cvm_id: String,
    /// Bound on each dial (TCP and TLS handshake). Default 60 s.
    #[serde(with = "duration_secs")]
    pub dial_timeout: Duration,
}

impl Default for CvmsSettings {
    fn default() -> Self {
        Self {
            url: "localhost:7001".into(),
            client_cert: None,
            client_key: None,
            server_ca_certs: None,
            cvm_id: String::new(),
            dial_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the environment does not make valid settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A client certificate without its key, or the reverse.
    #[error("{ENV_CLIENT_CERT} and {ENV_CLIENT_KEY} go together for mTLS; only {0} is set")]
    HalfIdentity(&'static str),
    /// A timeout that does not parse.
    #[error("{ENV_TIMEOUT}={0:?} is not a duration (e.g. 60s, 2m, 500ms)")]
    Timeout(String),
    /// An explicit `http://` URL while TLS is configured.
    #[error("{0:?} asks for plaintext (http://) but TLS settings are given")]
    PlaintextWithTls(String),
}

/// Whether and how the link is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain HTTP/2.
    Plaintext,
    /// TLS, server authenticated.
    Tls,
    /// TLS with a client certificate.
    MutualTls,
}

impl CvmsSettings {
    /// Settings for `url` with this VM's id, plaintext, default timeout.
    pub fn new(url: impl Into<String>, cvm_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cvm_id: cvm_id.into(),
            ..Self::default()
        }
    }

    /// Reads the process environment; `None` when `AGENT_CVM_GRPC_URL` is
    /// unset or empty (a VM run without a management service).
    pub fn from_env() -> Result<Option<Self>, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    /// Empty values count as unset, as in the Go agent.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, SettingsError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let Some(url) = get(ENV_URL) else {
            return Ok(None);
        };
        let dial_timeout = match get(ENV_TIMEOUT) {
            None => Self::default().dial_timeout,
            Some(t) => parse_duration(&t).ok_or(SettingsError::Timeout(t))?,
        };
        let s = Self {
            url,
            client_cert: get(ENV_CLIENT_CERT).map(PathBuf::from),
            client_key: get(ENV_CLIENT_KEY).map(PathBuf::from),
            server_ca_certs: get(ENV_SERVER_CA_CERTS).map(PathBuf::from),
            cvm_id: get(ENV_CVM_ID).unwrap_or_default(),
            dial_timeout,
        };
        s.check()?;
        Ok(Some(s))
    }

    /// Checks that the settings are consistent (both halves of a client
    /// identity, no `http://` with TLS).
    pub fn check(&self) -> Result<(), SettingsError> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => return Err(SettingsError::HalfIdentity(ENV_CLIENT_CERT)),
            (None, Some(_)) => return Err(SettingsError::HalfIdentity(ENV_CLIENT_KEY)),
            _ => {}
        }
        if self.security() != Security::Plaintext && self.url.starts_with("http://") {
            return Err(SettingsError::PlaintextWithTls(self.url.clone()));
        }
        Ok(())
    }

    /// What the settings ask for: a CA or a client identity turns TLS on,
    /// a client identity makes it mutual (as the Go agent decides).
    pub fn security(&self) -> Security {
        if self.client_cert.is_some() && self.client_key.is_some() {
            Security::MutualTls
        } else if self.server_ca_certs.is_some() || self.url.starts_with("https://") {
            Security::Tls
        } else {
            Security::Plaintext
        }
    }

    /// The URI to dial: `url` as given when it has a scheme, otherwise with
    /// `http://` or `https://` as [`security`](Self::security) says.
    pub fn uri(&self) -> String {
        if self.url.contains("://") {
            self.url.clone()
        } else if self.security() == Security::Plaintext {
            format!("http://{}", self.url)
        } else {
            format!("https://{}", self.url)
        }
    }
}

/// Parses `90`, `90s`, `2m`, `1h`, `500ms` (the forms Go's
/// `time.ParseDuration` gives for such settings; compound forms such as
/// `1m30s` are not accepted).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Serde for a [`Duration`] as whole seconds.
pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_url_means_no_management_service() {
        assert_eq!(CvmsSettings::from_lookup(env(&[])), Ok(None));
        assert_eq!(CvmsSettings::from_lookup(env(&[(ENV_URL, "")])), Ok(None));
    }

    #[test]
    fn environment_of_agent_api_1_3() {
        let s = CvmsSettings::from_lookup(env(&[
            (ENV_URL, "10.0.2.2:7001"),
            (ENV_CVM_ID, "vm-42"),
            (ENV_SERVER_CA_CERTS, "/etc/certs/ca.pem"),
            (ENV_CLIENT_CERT, "/etc/certs/cert.pem"),
            (ENV_CLIENT_KEY, "/etc/certs/key.pem"),
            (ENV_TIMEOUT, "5s"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.cvm_id, "vm-42");
        assert_eq!(s.security(), Security::MutualTls);
        assert_eq!(s.uri(), "https://10.0.2.2:7001");
        assert_eq!(s.dial_timeout, Duration::from_secs(5));
    }

    #[test]
    fn plaintext_by_default_and_tls_with_a_ca() {
        let mut s = CvmsSettings::new("localhost:7001", "x");
        assert_eq!(s.security(), Security::Plaintext);
        assert_eq!(s.uri(), "http://localhost:7001");
        s.server_ca_certs = Some("/ca.pem".into());
        assert_eq!(s.security(), Security::Tls);
        assert_eq!(s.uri(), "https://localhost:7001");
    }

    #[test]
    fn half_an_identity_is_refused() {
        let e = CvmsSettings::from_lookup(env(&[(ENV_URL, "h:1"), (ENV_CLIENT_KEY, "/k.pem")]));
        assert_eq!(e, Err(SettingsError::HalfIdentity(ENV_CLIENT_KEY)));
    }

    #[test]
    fn http_scheme_with_tls_is_refused() {
        let e = CvmsSettings::from_lookup(env(&[
            (ENV_URL, "http://h:1"),
            (ENV_SERVER_CA_CERTS, "/ca.pem"),
        ]));
        assert!(matches!(e, Err(SettingsError::PlaintextWithTls(_))));
    }

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1m30s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
