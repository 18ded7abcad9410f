//! SHA3-256 (FIPS 202) of what a manifest declares: a file's bytes, or a
//! directory's deterministic zip ([`crate::zip`]), computed while streaming.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha3::{Digest, Sha3_256};

use crate::zip::{self, ZipError};

/// A SHA3-256 digest.
pub type Sha3Digest = [u8; 32];

/// SHA3-256 of everything `reader` yields, read in 1 MiB pieces.
pub fn sha3_reader<R: Read>(mut reader: R) -> io::Result<Sha3Digest> {
    let mut hasher = Sha3_256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// SHA3-256 of a file's bytes.
pub fn sha3_file(path: &Path) -> io::Result<Sha3Digest> {
    sha3_reader(File::open(path)?)
}

/// A `Write` that hashes what goes through it.
struct HashWriter(Sha3_256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA3-256 of a file, or of a directory's deterministic zip (streamed
/// into the hash, never held in memory) — what `cocos-cli checksum`
/// prints and what the manifest's `hash` must be.
pub fn sha3_path(path: &Path) -> Result<Sha3Digest, ZipError> {
    let io_err = |source| ZipError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io_err)?.is_dir() {
        let mut w = HashWriter(Sha3_256::new());
        zip::write_dir(path, &mut w)?;
        Ok(w.0.finalize().into())
    } else {
        sha3_file(path).map_err(io_err)
    }
}
