//! Files streamed as 1 MiB messages, never held in memory whole, with a
//! progress bar on a terminal.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use sha3::{Digest, Sha3_256};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// Size of every chunk but a file's last (agent-api §3: the CLI sends 1 MiB
/// chunks).
pub const CHUNK: usize = 1 << 20;

/// A progress bar of `total` bytes (a spinner when unknown) on stderr,
/// hidden when stderr is not a terminal.
pub fn progress(total: Option<u64>, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// One file to stream, and how each chunk of it becomes a message.
pub struct Part<T> {
    /// The file.
    pub path: PathBuf,
    /// Wraps a chunk (empty for an empty file) in a message.
    pub wrap: Box<dyn Fn(Vec<u8>) -> T + Send>,
}

/// What the reader saw: each part's SHA3-256 as it was sent, or the error
/// that ended it.
pub type Sent = std::io::Result<Vec<[u8; 32]>>;

/// Reads `parts` in order on a task and yields their chunks as messages:
/// every chunk is [`CHUNK`] bytes but each file's last, and an empty file
/// yields one empty chunk. At most two messages wait in the queue. The
/// task's result tells what was sent; if the receiver goes away (the call
/// failed), the task stops.
pub fn spawn_reader<T: Send + 'static>(
    parts: Vec<Part<T>>,
    bar: ProgressBar,
) -> (ReceiverStream<T>, JoinHandle<Sent>) {
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(async move {
        let mut digests = Vec::with_capacity(parts.len());
        for part in parts {
            let mut file = tokio::fs::File::open(&part.path).await?;
            let mut hasher = Sha3_256::new();
            let mut first = true;
            loop {
                let chunk = read_chunk(&mut file).await?;
                if chunk.is_empty() && !first {
                    break;
                }
                first = false;
                let last = chunk.len() < CHUNK;
                hasher.update(&chunk);
                bar.inc(chunk.len() as u64);
                if tx.send((part.wrap)(chunk)).await.is_err() {
                    // The call ended; its status says why.
                    return Ok(digests);
                }
                if last {
                    break;
                }
            }
            digests.push(hasher.finalize().into());
        }
        Ok(digests)
    });
    (ReceiverStream::new(rx), task)
}

/// Up to [`CHUNK`] bytes: fewer only at the end of the file.
async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    while buf.len() < CHUNK {
        // `take` bounds this read to what is left of the chunk.
        let n = (&mut *file)
            .take((CHUNK - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}
