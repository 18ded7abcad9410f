//! The accept loop both proxies share: a bound on open connections, and a
//! graceful stop (stop accepting, let open connections finish up to a
//! timeout, then close them).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

/// Buffer size of each direction of a splice. Larger than tokio's 8 KiB
/// default: fewer wake-ups per byte on bulk transfers (uploads of datasets).
const SPLICE_BUFFER: usize = 64 * 1024;

/// Pause after an accept error such as EMFILE, so that a full file table
/// does not turn the loop into a busy spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Copies bytes both ways until both directions are done. When one side
/// ends its output (EOF, TLS close_notify), the other side's write half is
/// shut down and the opposite direction keeps flowing (half-close).
/// Returns the bytes copied `a → b` and `b → a`.
pub(crate) async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, SPLICE_BUFFER, SPLICE_BUFFER).await
}

/// What a connection handler gets besides its socket.
#[derive(Clone)]
pub(crate) struct ConnContext {
    /// Held for as long as the connection (and anything it spawns) lives:
    /// the connection bound counts it.
    pub(crate) permit: Arc<OwnedSemaphorePermit>,
    /// Work spawned for this connection (e.g. a tunnel after an HTTP
    /// upgrade) goes through [`ConnContext::spawn`], so that a stop waits
    /// for it and closes it at the deadline.
    tracker: TaskTracker,
    abort: CancellationToken,
}

impl ConnContext {
    /// Spawns `fut` as part of this server: a stop waits for it, and drops it
    /// at the shutdown deadline.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let abort = self.abort.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    () = abort.cancelled() => debug!("closed by shutdown"),
                    () = fut => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// Limits of a running server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// A running accept loop.
pub(crate) struct Running {
    name: &'static str,
    local_addr: SocketAddr,
    stop_accepting: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    accept_task: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Running {
    /// Starts accepting on `listener`; each connection runs
    /// `handler(socket, peer, context)`.
    pub(crate) fn spawn<H, F>(
        name: &'static str,
        listener: TcpListener,
        limits: Limits,
        handler: H,
    ) -> io::Result<Self>
    where
        H: Fn(TcpStream, SocketAddr, ConnContext) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let local_addr = listener.local_addr()?;
        let stop_accepting = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_task = tokio::spawn(accept_loop(
            name,
            listener,
            limits.max_connections,
            handler,
            stop_accepting.clone(),
            abort.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            name,
            local_addr,
            stop_accepting,
            abort,
            tracker,
            accept_task: Some(accept_task),
            shutdown_timeout: limits.shutdown_timeout,
        })
    }

    /// The address actually listened on (the port chosen when 0 was asked).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Number of connections (and tasks spawned for them) still open.
    pub(crate) fn open_connections(&self) -> usize {
        self.tracker.len()
    }

    /// Stops accepting (the listening socket is closed when this returns
    /// from its first step), waits up to the shutdown timeout for open
    /// connections to end, then closes the rest.
    pub(crate) async fn stop(&mut self) {
        self.stop_accepting.cancel();
        if let Some(task) = self.accept_task.take() {
            if let Err(e) = task.await {
                warn!(server = self.name, "accept loop ended abnormally: {e}");
            }
        }
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            info!(
                server = self.name,
                open,
                timeout = ?self.shutdown_timeout,
                "stopped accepting; waiting for open connections"
            );
        }
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                server = self.name,
                open = self.tracker.len(),
                "connections still open at the shutdown deadline; closing them"
            );
            self.abort.cancel();
            self.tracker.wait().await;
        }
        info!(server = self.name, addr = %self.local_addr, "stopped");
    }
}

impl Drop for Running {
    // A handle dropped without `stop` must not leave a listener or
    // connections behind.
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.abort.cancel();
    }
}

async fn accept_loop<H, F>(
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    handler: H,
    stop: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(TcpStream, SocketAddr, ConnContext) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        if slots.available_permits() == 0 {
            debug!(
                server = name,
                max_connections, "connection limit reached; new connections wait"
            );
        }
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(server = name, "accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        debug!(server = name, %peer, "connection accepted");
        let context = ConnContext {
            permit: Arc::new(permit),
            tracker: tracker.clone(),
            abort: abort.clone(),
        };
        let span = tracing::debug_span!("conn", server = name, %peer);
        context.spawn(handler(socket, peer, context.clone()).instrument(span));
    }
    // The listener is dropped here: new connections are refused from now on.
    drop(listener);
}
