//! An upload streamed to a temporary file under `.staging/` while its
//! SHA3-256 is computed, never held whole in memory.
//!
//! Chunks go through a small channel (4 in flight) to one blocking task
//! that hashes and writes them, so the async side only moves buffers. The
//! file is a [`tempfile::NamedTempFile`]: whatever ends the upload early —
//! an error, the cap, a broken stream, the call being dropped — removes
//! it. Only an accepted upload is renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha3::{Digest, Sha3_256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ServiceError;

/// A finished upload, still in `.staging/`.
#[derive(Debug)]
pub struct Spooled {
    /// The file (removed when dropped unless persisted).
    pub file: NamedTempFile,
    /// SHA3-256 of its bytes.
    pub sha3: [u8; 32],
    /// Its length.
    pub len: u64,
}

/// An upload in progress.
#[derive(Debug)]
pub struct Spool {
    what: &'static str,
    cap: u64,
    len: u64,
    /// The file's path: removed at once when the upload is dropped
    /// unfinished (the writer may still hold it open for a moment).
    path: PathBuf,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    task: Option<JoinHandle<std::io::Result<Spooled>>>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.task.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Spool {
    /// Starts an upload of `what` (for messages) into a new file in `dir`,
    /// refusing more than `cap` bytes.
    pub fn create(dir: &Path, what: &'static str, cap: u64) -> Result<Self, ServiceError> {
        let mut file = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(dir)
            .map_err(|e| ServiceError::io("creating the upload file", e))?;
        let path = file.path().to_path_buf();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha3_256::new();
            let mut len = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            file.flush()?;
            Ok(Spooled {
                file,
                sha3: hasher.finalize().into(),
                len,
            })
        });
        Ok(Self {
            what,
            cap,
            len: 0,
            path,
            tx: Some(tx),
            task: Some(task),
        })
    }

    /// Bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a chunk; refuses it when the total would pass the cap.
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), ServiceError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        if self.len.saturating_add(n) > self.cap {
            return Err(ServiceError::TooLarge {
                what: self.what,
                cap: self.cap,
            });
        }
        self.len += n;
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped: it failed; its error says why.
            self.tx = None;
            return Err(match self.task.as_mut() {
                Some(task) => match task.await {
                    Ok(Err(e)) => ServiceError::io("writing the upload", e),
                    Ok(Ok(_)) => ServiceError::Internal("upload writer stopped early".into()),
                    Err(e) => ServiceError::io("upload writer", e),
                },
                None => ServiceError::Internal("upload already finished".into()),
            });
        }
        Ok(())
    }

    /// Ends the upload: waits for the writer and returns the file and its
    /// hash.
    pub async fn finish(mut self) -> Result<Spooled, ServiceError> {
        self.tx = None;
        let Some(task) = self.task.as_mut() else {
            return Err(ServiceError::Internal("upload already finished".into()));
        };
        let done = task.await;
        // From here the file belongs to the `Spooled` (or is gone).
        self.task = None;
        match done {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&self.path);
                Err(ServiceError::io("writing the upload", e))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(ServiceError::io("upload writer", e))
            }
        }
    }
}
