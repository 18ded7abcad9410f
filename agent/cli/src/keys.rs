//! `cocos-cli keys`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cocos_auth::{KeyType, PrivateKey};

/// `keys` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Generate a key pair: `private.pem` (PKCS#8 `PRIVATE KEY`, mode 0600)
    /// and `public.pem` (`PUBLIC KEY`, SubjectPublicKeyInfo). RSA keys are
    /// 4096-bit, ECDSA keys P-256.
    Generate {
        /// Key algorithm.
        #[arg(long = "type", short = 'k', value_enum, default_value = "ed25519")]
        kind: Kind,
        /// Directory to write the two files into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Key algorithms of `keys generate`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256.
    Ecdsa,
    /// RSA, 4096-bit (slow to generate in debug builds).
    Rsa,
}

fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (--force replaces it)", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs a `keys` subcommand.
pub fn run(cmd: &Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Generate {
            kind,
            out_dir,
            force,
        } => {
            let kind = match kind {
                Kind::Ed25519 => KeyType::Ed25519,
                Kind::Ecdsa => KeyType::Ecdsa,
                Kind::Rsa => KeyType::Rsa,
            };
            let key = PrivateKey::generate(kind)?;
            let private = out_dir.join("private.pem");
            let public = out_dir.join("public.pem");
            write_new(&private, key.to_pkcs8_pem()?.as_bytes(), 0o600, *force)?;
            write_new(&public, key.public().to_pem()?.as_bytes(), 0o644, *force)?;
            eprintln!(
                "wrote {} and {} ({})",
                private.display(),
                public.display(),
                key.public().kind()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
