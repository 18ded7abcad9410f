//! The VM's log forwarder and the client its services use.
//!
//! Every service in the confidential VM (the agent, the computation runner,
//! the proxies) sends its logs and events to the forwarder's
//! `log.LogCollector` on `/run/cocos/log.sock`; the forwarder relays them to
//! the computation management service on its own `cvms.Service/Process`
//! stream, as `ClientStreamMessage{agent_log}` and `{agent_event}`, with the
//! metadata `job-id` (the CVM id) and `connection-type: log-forwarder`
//! (agent-api §6.2).
//!
//! - **Server** ([`serve`], [`Forwarder`]): appends each message to a disk
//!   buffer ([`buffer`], format in [`segment`]) before acknowledging it,
//!   and a pump sends the buffer, in order, on the stream
//!   ([`upstream`]). While the management service is unreachable the
//!   buffer grows, bounded in bytes: the oldest logs are dropped first,
//!   events never. After a reconnect (or a restart of the forwarder) the
//!   buffer is replayed from the oldest unconfirmed message.
//! - **Client** ([`client::LogClient`], [`layer::LogLayer`]): a handle that
//!   never blocks its caller (a bounded, drop-oldest-logs queue emptied by
//!   a background task), and a `tracing` layer over it.
//!
//! # Delivery semantics
//!
//! Order: messages reach the management service in the order the
//! forwarder accepted them, across reconnects and restarts. Per client, the
//! order of acceptance is the order of `log`/`event` calls (the client
//! sends one message at a time).
//!
//! At-least-once, within bounds: `cvms.Process` has no acknowledgements,
//! so a message counts as delivered once it was handed to a stream that
//! then stayed up for `delivery.confirm_after_ms` (15 s). If the stream
//! breaks sooner, the unconfirmed messages are sent again on the next
//! stream, so the management service may see the last few seconds before a
//! break twice, but never a gap. One exception keeps delivery moving: after
//! `delivery.max_replays` (3) streams in a row broke before anything on them
//! was confirmed, what they carried counts as delivered (with a WARN), so
//! that a service that always drops the stream early, or on one message,
//! cannot stop everything behind it. Otherwise messages are lost only by the
//! drop policy (oldest logs, when the disk bound is reached, or when a
//! client's queue is full), and each drop is counted and reported in a WARN.
//!
//! ```no_run
//! # async fn f() -> Result<(), cocos_logfwd::ServeError> {
//! // The forwarder process: configuration from the environment, as the Go one.
//! cocos_logfwd::serve(cocos_logfwd::Config::from_env()).await
//! # }
//! ```

pub mod backoff;
pub mod buffer;
pub mod client;
pub mod config;
pub mod forwarder;
pub mod layer;
pub mod segment;
pub mod upstream;

pub use client::{Level, LogClient};
pub use config::Config;
pub use forwarder::{Forwarder, ServeError};
pub use layer::LogLayer;
pub use upstream::{GrpcUpstream, Upstream};

/// Runs the forwarder with the real management service link until SIGTERM
/// or SIGINT, then shuts it down (what is undelivered stays on disk).
pub async fn serve(config: Config) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};

    let upstream = GrpcUpstream::new(config.upstream.clone())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let mut forwarder = Forwarder::start(&config, upstream).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        error = forwarder.stopped() => return Err(error),
    }
    forwarder.shutdown().await
}
