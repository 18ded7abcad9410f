//! Certificates and keys given the way the agent's configuration gives them:
//! a file path or the PEM text itself (agent-api.md §2.1).
//!
//! The rule, kept from the existing agent so that its manifests mean the same
//! here: a value **shorter than 1000 bytes with no newline is a path**;
//! anything else is inline PEM. An empty value means "not configured".

use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Values at least this long (in bytes, as Go's `len` counts) are inline PEM
/// even without a newline (agent-api.md §2.1).
pub const PATH_MAX_LEN: usize = 1000;

/// Where a certificate or key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file holding PEM.
    Path(PathBuf),
    /// The PEM text itself.
    Inline(String),
}

impl PemSource {
    /// Reads a configuration value by the path-or-PEM rule: `None` for an
    /// empty value, a [`PemSource::Path`] for a value under
    /// [`PATH_MAX_LEN`] bytes without a newline, inline PEM otherwise.
    ///
    /// ```
    /// use cocos_proxy::PemSource;
    ///
    /// assert_eq!(PemSource::from_config_value(""), None);
    /// assert!(matches!(PemSource::from_config_value("/etc/certs/cert.pem"), Some(PemSource::Path(_))));
    /// let pem = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n";
    /// assert!(matches!(PemSource::from_config_value(pem), Some(PemSource::Inline(_))));
    /// ```
    pub fn from_config_value(value: &str) -> Option<Self> {
        if value.is_empty() {
            None
        } else if value.len() < PATH_MAX_LEN && !value.contains('\n') {
            Some(Self::Path(PathBuf::from(value)))
        } else {
            Some(Self::Inline(value.to_owned()))
        }
    }

    /// Where the PEM comes from, for messages: the path, or `inline PEM`.
    pub fn origin(&self) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Inline(_) => "inline PEM".to_owned(),
        }
    }

    /// The PEM bytes: the file's content or the inline text.
    fn bytes(&self, field: &'static str) -> Result<Vec<u8>, PemError> {
        match self {
            Self::Path(p) => {
                std::fs::read(p).map_err(|e| PemError::new(field, self, PemErrorKind::Read(e)))
            }
            Self::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }
}

// Inline PEM may hold a private key: never print it.
impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Inline(s) => write!(f, "Inline({} bytes)", s.len()),
        }
    }
}

/// A certificate or key that could not be loaded. Its message names the
/// configuration field and the path (or `inline PEM`).
#[derive(Debug, thiserror::Error)]
#[error("{field} ({origin}): {kind}")]
pub struct PemError {
    /// The configuration field: `cert`, `key` or `client_ca`.
    pub field: &'static str,
    /// The path, or `inline PEM`.
    pub origin: String,
    /// What went wrong.
    #[source]
    pub kind: PemErrorKind,
}

impl PemError {
    fn new(field: &'static str, source: &PemSource, kind: PemErrorKind) -> Self {
        Self {
            field,
            origin: source.origin(),
            kind,
        }
    }
}

/// What went wrong loading PEM.
#[derive(Debug, thiserror::Error)]
pub enum PemErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The PEM is malformed.
    #[error("malformed PEM: {0}")]
    Malformed(#[source] pem::Error),
    /// No `CERTIFICATE` block.
    #[error("no CERTIFICATE block")]
    NoCertificate,
    /// No unencrypted private key block.
    #[error(
        "no private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; encrypted keys are not supported)"
    )]
    NoPrivateKey,
}

/// Every `CERTIFICATE` block of `source`, in order (a chain: leaf first; or
/// a set of CA roots). Other blocks are skipped; none at all is an error.
pub fn load_certificates(
    field: &'static str,
    source: &PemSource,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = source.bytes(field)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new(field, source, PemErrorKind::Malformed(e)))?;
    if certs.is_empty() {
        return Err(PemError::new(field, source, PemErrorKind::NoCertificate));
    }
    Ok(certs)
}

/// The first private key of `source`: PKCS#8 (`PRIVATE KEY`), PKCS#1
/// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
pub fn load_private_key(
    field: &'static str,
    source: &PemSource,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = source.bytes(field)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let kind = match e {
            pem::Error::NoItemsFound => PemErrorKind::NoPrivateKey,
            other => PemErrorKind::Malformed(other),
        };
        PemError::new(field, source, kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_value_without_newline_is_a_path() {
        let v = "a".repeat(PATH_MAX_LEN - 1);
        assert_eq!(
            PemSource::from_config_value(&v),
            Some(PemSource::Path(v.clone().into()))
        );
    }

    #[test]
    fn value_of_1000_bytes_is_inline() {
        let v = "a".repeat(PATH_MAX_LEN);
        assert_eq!(PemSource::from_config_value(&v), Some(PemSource::Inline(v)));
    }

    #[test]
    fn short_value_with_newline_is_inline() {
        assert_eq!(
            PemSource::from_config_value("x\ny"),
            Some(PemSource::Inline("x\ny".into()))
        );
    }

    #[test]
    fn length_is_counted_in_bytes_as_go_does() {
        // 500 two-byte characters: 1000 bytes, so inline.
        let v = "é".repeat(500);
        assert!(matches!(
            PemSource::from_config_value(&v),
            Some(PemSource::Inline(_))
        ));
    }

    #[test]
    fn empty_value_is_unset() {
        assert_eq!(PemSource::from_config_value(""), None);
    }

    #[test]
    fn debug_never_prints_inline_pem() {
        let s = PemSource::Inline("-----BEGIN PRIVATE KEY-----\nsecret\n".into());
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn missing_file_error_names_field_and_path() {
        let src = PemSource::Path("/nonexistent/cert.pem".into());
        let e = load_certificates("cert", &src).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("cert (/nonexistent/cert.pem): cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn pem_without_certificate_is_refused() {
        let src = PemSource::Inline("hello\nworld\n".into());
        let e = load_certificates("client_ca", &src).unwrap_err();
        assert!(matches!(e.kind, PemErrorKind::NoCertificate), "{e}");
        assert_eq!(
            e.to_string(),
            "client_ca (inline PEM): no CERTIFICATE block"
        );
    }

    #[test]
    fn certificate_is_not_a_key() {
        let src = PemSource::Inline(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        );
        let e = load_private_key("key", &src).unwrap_err();
        assert!(matches!(e.kind, PemErrorKind::NoPrivateKey), "{e}");
    }
}
