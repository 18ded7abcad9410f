//! `cocos-measure verity format|verify|dump`: dm-verity hash trees, with the
//! output and semantics of veritysetup.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cocos_measure::verity::{
    self, BlockSize, HashAlgorithm, ParamError, Salt, VerityError, VerityOptions, VerityReport,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use super::EXIT_MISMATCH;

/// `cocos-measure verity ...`.
#[derive(Subcommand)]
pub enum VerityCommand {
    /// Build the hash tree of DATA into HASH and print the root hash.
    ///
    /// Output and hash file match `veritysetup format` for the same parameters.
    /// Without --salt and --uuid, both are random, as in veritysetup. Unlike
    /// veritysetup, DATA must be a whole number of data blocks unless
    /// --data-blocks is given.
    Format {
        /// Data file or block device.
        data: PathBuf,
        /// Hash file or block device (created if missing).
        hash: PathBuf,
        #[command(flatten)]
        opts: TreeArgs,
        /// Also write the root hash (hex, no newline) to this file.
        #[arg(long, value_name = "FILE")]
        root_hash_file: Option<PathBuf>,
        /// Print one JSON object instead of veritysetup's text.
        #[arg(long)]
        json: bool,
    },
    /// Check every block of DATA against HASH and ROOTHASH.
    ///
    /// Parameters come from the superblock unless --no-superblock is given;
    /// options that are given must then agree with it. The tree is checked
    /// from the top down, so the block reported is the corrupt one.
    Verify {
        /// Data file or block device.
        data: PathBuf,
        /// Hash file or block device.
        hash: PathBuf,
        /// Expected root hash (hex); or use --root-hash-file.
        #[arg(required_unless_present = "root_hash_file")]
        root_hash: Option<String>,
        #[command(flatten)]
        opts: TreeArgs,
        /// Read the expected root hash from this file.
        #[arg(long, value_name = "FILE", conflicts_with = "root_hash")]
        root_hash_file: Option<PathBuf>,
        /// Print one JSON object describing the result.
        #[arg(long)]
        json: bool,
    },
    /// Print the superblock of HASH.
    Dump {
        /// Hash file or block device.
        hash: PathBuf,
        /// Byte offset of the superblock.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        hash_offset: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Tree parameters, named as in veritysetup.
#[derive(Args)]
pub struct TreeArgs {
    /// Hash algorithm [default: sha256].
    #[arg(long = "hash", value_name = "ALG", value_parser = parse_algorithm)]
    algorithm: Option<HashAlgorithm>,
    /// Data block size in bytes, a power of two in 512..=65536 [default: 4096].
    #[arg(long, value_name = "N", value_parser = parse_block_size)]
    data_block_size: Option<BlockSize>,
    /// Hash block size in bytes, a power of two in 512..=65536 [default: 4096].
    #[arg(long, value_name = "N", value_parser = parse_block_size)]
    hash_block_size: Option<BlockSize>,
    /// Salt in hex, at most 256 bytes; `-` for none [default: 32 random bytes].
    #[arg(long, value_name = "HEX", value_parser = parse_salt, allow_hyphen_values = true)]
    salt: Option<Salt>,
    /// UUID for the superblock [default: random].
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    uuid: Option<UuidArg>,
    /// Do not write or read a superblock.
    #[arg(long)]
    no_superblock: bool,
    /// Byte offset of the hash area in HASH (512-byte aligned; with
    /// --no-superblock, hash-block aligned).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    hash_offset: u64,
    /// Number of data blocks to hash [default: all of DATA].
    #[arg(long, value_name = "N")]
    data_blocks: Option<u64>,
}

impl TreeArgs {
    fn options(&self) -> VerityOptions {
        VerityOptions {
            algorithm: self.algorithm,
            data_block_size: self.data_block_size,
            hash_block_size: self.hash_block_size,
            salt: self.salt.clone(),
            uuid: self.uuid.as_ref().map(|u| u.uuid),
            no_superblock: self.no_superblock,
            hash_offset: self.hash_offset,
            data_blocks: self.data_blocks,
        }
    }
}

fn parse_algorithm(s: &str) -> Result<HashAlgorithm, ParamError> {
    s.parse()
}

fn parse_block_size(s: &str) -> Result<BlockSize, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    BlockSize::new(n).map_err(|e| e.to_string())
}

/// A UUID as given: veritysetup prints it back in the case it was given.
#[derive(Clone)]
struct UuidArg {
    uuid: Uuid,
    text: String,
}

fn parse_uuid(s: &str) -> Result<UuidArg, String> {
    // veritysetup (libuuid) accepts only the 36-character hyphenated form.
    let uuid = Uuid::try_parse(s).map_err(|e| e.to_string())?;
    if s.len() != 36 {
        return Err("expected the hyphenated form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".into());
    }
    Ok(UuidArg {
        uuid,
        text: s.to_owned(),
    })
}

fn parse_salt(s: &str) -> Result<Salt, ParamError> {
    Salt::from_hex(s)
}

/// Runs `cocos-measure verity ...`.
pub fn run(command: VerityCommand) -> Result<ExitCode> {
    match command {
        VerityCommand::Format {
            data,
            hash,
            opts,
            root_hash_file,
            json,
        } => format(&data, &hash, opts, root_hash_file.as_deref(), json),
        VerityCommand::Verify {
            data,
            hash,
            root_hash,
            opts,
            root_hash_file,
            json,
        } => {
            let root_hash = match (root_hash, root_hash_file) {
                (Some(hex), _) => hex,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("{}: cannot read root hash file", path.display()))?,
                (None, None) => anyhow::bail!("give ROOTHASH or --root-hash-file"),
            };
            verify(&data, &hash, &opts, &root_hash, json)
        }
        VerityCommand::Dump {
            hash,
            hash_offset,
            json,
        } => {
            let report = verity::dump(&hash, hash_offset)?;
            print_report(&hash, &report, None, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `verity format`.
fn format(
    data: &Path,
    hash: &Path,
    opts: TreeArgs,
    root_hash_file: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let bar = progress_bar(data, "hashing");
    let (report, _tree) = verity::format(data, hash, &opts.options(), &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if let (Some(path), Some(root)) = (root_hash_file, &report.params.root_hash) {
        verity::write_root_hash_file(path, root)?;
    }
    let uuid_text = opts.uuid.map(|u| u.text);
    print_report(hash, &report, uuid_text, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `verity verify`: exit status 1 when the tree or the data does not match
/// `root_hash`.
fn verify(
    data: &Path,
    hash: &Path,
    opts: &TreeArgs,
    root_hash: &str,
    json: bool,
) -> Result<ExitCode> {
    let bar = progress_bar(data, "verifying");
    let result = verity::verify(data, hash, &opts.options(), root_hash, &|n| bar.inc(n));
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if json {
                let mut value = serde_json::to_value(&report)?;
                value["verified"] = true.into();
                println!("{value}");
            } else {
                println!(
                    "Verified {} data blocks of {} against root hash {}.",
                    report.params.data_blocks,
                    data.display(),
                    root_hash.trim()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(VerityError::Corrupt(corruption)) => {
            let message = format!("verification failed: {corruption}");
            if json {
                let value = serde_json::json!({
                    "verified": false,
                    "error": message,
                    "corruption": corruption,
                });
                println!("{value}");
            }
            eprintln!("cocos-measure: {message}");
            Ok(ExitCode::from(EXIT_MISMATCH))
        }
        Err(other) => Err(other.into()),
    }
}

/// Prints a report as `veritysetup format`/`dump` do (crypt_dump), or JSON.
/// `uuid_text` is the UUID as the user typed it, which veritysetup echoes.
fn print_report(
    hash: &Path,
    r: &VerityReport,
    uuid_text: Option<String>,
    json: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    writeln!(out, "VERITY header information for {}", hash.display())?;
    let p = &r.params;
    let uuid = match (p.uuid, uuid_text) {
        (Some(_), Some(text)) => text,
        (Some(uuid), None) => uuid.to_string(),
        (None, _) => String::new(),
    };
    writeln!(out, "UUID:            \t{uuid}")?;
    writeln!(out, "Hash type:       \t{}", p.hash_type)?;
    writeln!(out, "Data blocks:     \t{}", p.data_blocks)?;
    writeln!(out, "Data block size: \t{}", p.data_block_size)?;
    writeln!(out, "Hash blocks:     \t{}", r.hash_blocks)?;
    writeln!(out, "Hash block size: \t{}", p.hash_block_size)?;
    writeln!(out, "Hash algorithm:  \t{}", p.algorithm)?;
    writeln!(out, "Salt:            \t{}", p.salt.to_display_hex())?;
    if let Some(root) = &p.root_hash {
        writeln!(out, "Root hash:      \t{root}")?;
    }
    // veritysetup prints the device size only when the area starts at 0.
    if r.hash_offset == 0 {
        writeln!(out, "Hash device size: \t{} [bytes]", r.hash_area_end)?;
    }
    Ok(())
}

/// A progress bar on stderr for data of at least 64 MiB, hidden when stderr
/// is not a terminal.
fn progress_bar(data: &Path, verb: &str) -> ProgressBar {
    let len = std::fs::metadata(data).map(|m| m.len()).unwrap_or(0);
    if len < 64 << 20 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("{verb} {}", data.display()));
    bar
}
