//! [`LogLayer`]: a `tracing_subscriber` layer that sends the process's
//! tracing events to the forwarder as `AgentLog`s, so that services just
//! use `tracing`.
//!
//! Each event becomes one log (split by the client if very long):
//! - `level`: `DEBUG` (for TRACE and DEBUG), `INFO`, `WARN`, `ERROR`;
//! - `message`: the event's message, then its other fields as ` key=value`
//!   in the order written; a value that is empty or has spaces, `=` or
//!   quotes is written quoted, as Rust's `{:?}` quotes a string (a `?field`
//!   whose Debug form is already a quoted string is left as it is);
//! - `computation_id`: the event's `computation_id` field, else that of the
//!   nearest enclosing span that has one, else empty; the field is not
//!   repeated in the message.
//!
//! Events emitted while the client's own background task runs (its retries,
//! and the transport under it) are skipped, so that forwarding never feeds
//! itself.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use cocos_logfwd::{LogClient, LogLayer};
//! use tracing_subscriber::prelude::*;
//!
//! let client = LogClient::connect("/run/cocos/log.sock", "computation-runner")?;
//! tracing_subscriber::registry()
//!     .with(LogLayer::new(client))
//!     .with(tracing_subscriber::fmt::layer())
//!     .init();
//! let span = tracing::info_span!("run", computation_id = "c1");
//! let _entered = span.enter();
//! tracing::info!(pid = 42, "algorithm started"); // "algorithm started pid=42", computation c1
//! # Ok(()) }
//! ```

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::client::{Level, LogClient, in_client_task};

/// The field that names the computation.
const COMPUTATION_ID: &str = "computation_id";

/// Sends tracing events to the forwarder through a [`LogClient`] (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct LogLayer {
    client: LogClient,
    level: tracing::Level,
}

impl LogLayer {
    /// Forwards events at INFO and more severe.
    pub fn new(client: LogClient) -> LogLayer {
        LogLayer {
            client,
            level: tracing::Level::INFO,
        }
    }

    /// Forwards events at `level` and more severe (e.g. `DEBUG` for debug
    /// logs too).
    pub fn with_level(mut self, level: tracing::Level) -> LogLayer {
        self.level = level;
        self
    }
}

/// A span's `computation_id`, kept in its extensions.
struct SpanComputationId(String);

/// Collects an event's message, `computation_id` and other fields.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    computation_id: Option<String>,
    rest: String,
}

impl Fields {
    fn add(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = Some(value),
            COMPUTATION_ID => self.computation_id = Some(value),
            name => {
                // A `?text` field arrives already quoted by Debug.
                let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
                let needs_quotes = !quoted
                    && (value.is_empty()
                        || value
                            .chars()
                            .any(|c| c.is_whitespace() || c == '=' || c == '"'));
                if needs_quotes {
                    let _ = write!(self.rest, " {name}={value:?}");
                } else {
                    let _ = write!(self.rest, " {name}={value}");
                }
            }
        }
    }

    fn text(self) -> String {
        let mut text = self.message.unwrap_or_default();
        if text.is_empty() {
            text = self.rest.trim_start().to_string();
        } else {
            text.push_str(&self.rest);
        }
        text
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message arrives here as format arguments, whose Debug form
        // is the formatted text; other values keep their Debug form.
        self.add(field, format!("{value:?}"));
    }
}

/// Picks only `computation_id` out of a span's fields.
struct SpanFields(Option<String>);

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == COMPUTATION_ID {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == COMPUTATION_ID {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields(None);
        attrs.record(&mut fields);
        if let (Some(value), Some(span)) = (fields.0, ctx.span(id)) {
            span.extensions_mut().replace(SpanComputationId(value));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = SpanFields(None);
        values.record(&mut fields);
        if let (Some(value), Some(span)) = (fields.0, ctx.span(id)) {
            span.extensions_mut().replace(SpanComputationId(value));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // tracing orders levels by verbosity: TRACE > DEBUG > ... > ERROR.
        if *event.metadata().level() > self.level || in_client_task() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let computation_id = fields.computation_id.take().or_else(|| {
            ctx.event_scope(event)?.find_map(|span| {
                span.extensions()
                    .get::<SpanComputationId>()
                    .map(|c| c.0.clone())
            })
        });
        let level = Level::from(*event.metadata().level());
        self.client.log(
            level,
            computation_id.as_deref().unwrap_or(""),
            &fields.text(),
        );
    }
}
