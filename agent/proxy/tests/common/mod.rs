//! Helpers shared by the integration tests: reference tools, a PKI made by
//! the `openssl` CLI, deterministic payloads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// Fails loudly when a reference tool is missing.
pub fn require_tool(tool: &str, install_hint: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}`; install it with: {install_hint}"
    );
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Certificates and keys made by the `openssl` CLI: a CA with a server
/// certificate (SAN localhost and 127.0.0.1) and a client certificate, and
/// a second, unrelated CA with its own client certificate.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_leaf(dir: &Path, ca: &str, name: &str, serial: u32, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        require_tool("openssl", "apt-get install -y openssl");
        make_ca(dir, "ca");
        make_leaf(
            dir,
            "ca",
            "server",
            2,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
             basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        );
        let client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n\
                          keyUsage=critical,digitalSignature\n";
        make_leaf(dir, "ca", "client", 3, client_ext);
        make_ca(dir, "other-ca");
        make_leaf(dir, "other-ca", "other-client", 4, client_ext);
        Self {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_client_cert: dir.join("other-client.pem"),
            other_client_key: dir.join("other-client.key"),
        }
    }
}

/// A fixed pseudo-random byte sequence (xorshift64) of a given length,
/// produced chunk by chunk.
pub struct Payload {
    state: u64,
    remaining: usize,
}

impl Payload {
    pub fn new(len: usize) -> Self {
        Self {
            state: 0x9E37_79B9_7F4A_7C15,
            remaining: len,
        }
    }

    /// The next chunk of at most `max` bytes (`max` a multiple of 8), or
    /// `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min(max);
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            out.extend_from_slice(&self.state.to_le_bytes());
        }
        out.truncate(n);
        self.remaining -= n;
        Some(out)
    }
}

/// SHA-256 of the whole [`Payload`] of `len` bytes.
pub fn payload_sha256(len: usize) -> [u8; 32] {
    let mut p = Payload::new(len);
    let mut h = Sha256::new();
    while let Some(chunk) = p.next_chunk(1 << 20) {
        h.update(&chunk);
    }
    h.finalize().into()
}
