//! The connection to the agent's ingress: URL, TLS (server CA, client
//! certificate, server name) or explicit plaintext.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::failure::Failure;

/// The agent's ingress port (agent-api §3), used when the URL names none.
pub const DEFAULT_PORT: u16 = 7002;

/// Largest message accepted from the agent. It streams 1 MiB chunks; the
/// margin lets a slightly different peer through without taking unbounded
/// memory.
pub const MAX_MESSAGE: usize = 8 << 20;

/// How to reach the agent; shared by `algo`, `data` and `result`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The agent's address: https://HOST[:PORT] or HOST[:PORT] (port 7002
    /// when absent); http://... only with --plaintext.
    #[arg(
        long,
        env = "COCOS_AGENT_URL",
        default_value = "https://localhost:7002",
        value_name = "URL"
    )]
    pub addr: String,
    /// PEM file of the CA that signed the agent's certificate. Without it,
    /// the system's trust store is used.
    #[arg(long, env = "COCOS_AGENT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(
        long,
        env = "COCOS_AGENT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client certificate's private key (PEM) for mutual TLS, with
    /// --tls-cert.
    #[arg(
        long,
        env = "COCOS_AGENT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name the agent's certificate must carry (default: the URL's host).
    #[arg(long, env = "COCOS_AGENT_DOMAIN", value_name = "NAME")]
    pub domain: Option<String>,
    /// Talk to the agent without TLS: nothing is encrypted or
    /// authenticated. For development only; prints a warning.
    #[arg(long)]
    pub plaintext: bool,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,
}

impl ConnectArgs {
    /// The URI to dial: the scheme follows the mode (https, or http with
    /// --plaintext), the port defaults to 7002.
    pub fn uri(&self) -> anyhow::Result<Uri> {
        let raw = self.addr.trim();
        let (scheme, rest) = match raw.split_once("://") {
            Some(("https", rest)) => ("https", rest),
            Some(("http", rest)) if self.plaintext => ("http", rest),
            Some(("http", _)) => {
                bail!("--addr {raw}: an http:// URL is plaintext; add --plaintext to mean it")
            }
            Some((other, _)) => bail!("--addr {raw}: unknown scheme {other:?} (https or http)"),
            None => ("https", raw),
        };
        let scheme = if self.plaintext { "http" } else { scheme };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--addr {raw}: expected HOST[:PORT], with no path");
        }
        let uri: Uri = format!("{scheme}://{authority}")
            .parse()
            .with_context(|| format!("--addr {raw}"))?;
        if uri.port().is_some() {
            return Ok(uri);
        }
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal keeps its brackets in the authority.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("{scheme}://{host}:{DEFAULT_PORT}")
            .parse()
            .with_context(|| format!("--addr {raw}"))
    }

    /// The TLS settings, from the files named (read here, so that a missing
    /// file is a usage error, not a connection failure).
    fn tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut tls = ClientTlsConfig::new()
            // An ingress that terminates TLS without ALPN still speaks
            // HTTP/2 behind it: gRPC is all it carries.
            .assume_http2(true)
            .timeout(Duration::from_secs(self.connect_timeout));
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--ca")?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }

    /// The endpoint to connect to, TLS configured. Errors here are usage
    /// errors (exit status 2).
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let uri = self.uri()?;
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(Duration::from_secs(self.connect_timeout))
            .tcp_nodelay(true);
        if self.plaintext {
            if self.ca.is_some() || self.tls_cert.is_some() || self.domain.is_some() {
                bail!(
                    "--plaintext together with TLS settings (--ca, --tls-cert/--tls-key, --domain, or their COCOS_AGENT_* variables): drop one or the other"
                );
            }
            eprintln!(
                "warning: --plaintext: the connection to the agent is neither encrypted nor authenticated"
            );
        } else {
            endpoint = endpoint
                .tls_config(self.tls()?)
                .context("TLS settings for the agent")?;
        }
        Ok(endpoint)
    }

    /// The URL as shown in messages.
    pub fn display_addr(&self) -> String {
        self.uri()
            .map(|u| u.to_string().trim_end_matches('/').to_string())
            .unwrap_or_else(|_| self.addr.clone())
    }
}

fn read(path: &Path, option: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{option} {}", path.display()))
}

/// Connects to `endpoint`; a failure is [`Failure::Unreachable`].
pub async fn connect(endpoint: Endpoint, addr: &str) -> Result<Channel, Failure> {
    endpoint
        .connect()
        .await
        .map_err(|e| Failure::unreachable(addr, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: ConnectArgs,
    }

    fn uri(args: &[&str]) -> anyhow::Result<String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        Ok(t.c.uri()?.to_string())
    }

    #[test]
    fn plaintext_with_tls_settings_is_refused() {
        let t = T::try_parse_from(["t", "--plaintext", "--ca", "x"]).unwrap();
        assert!(t.c.endpoint().is_err());
    }

    #[test]
    fn addresses_get_the_mode_scheme_and_the_ingress_port() {
        assert_eq!(
            uri(&["--addr", "example.org"]).unwrap(),
            "https://example.org:7002/"
        );
        assert_eq!(
            uri(&["--addr", "https://10.0.0.1:443"]).unwrap(),
            "https://10.0.0.1:443/"
        );
        assert_eq!(
            uri(&["--addr", "localhost:9", "--plaintext"]).unwrap(),
            "http://localhost:9/"
        );
        assert_eq!(
            uri(&["--addr", "[::1]", "--plaintext"]).unwrap(),
            "http://[::1]:7002/"
        );
        assert!(uri(&["--addr", "http://h:1"]).is_err());
        assert!(uri(&["--addr", "ftp://h:1"]).is_err());
        assert!(uri(&["--addr", "https://h:1/path"]).is_err());
    }
}
