//! Receivers: how spans from other languages enter the pipeline.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::pipeline::{Pipeline, Unavailable};

pub(crate) mod limit;
pub(crate) mod otlp;

/// Which OTLP signal a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Logs,
}

/// What both transports share: the pipeline, the limits, the token.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) pipeline: Pipeline,
    /// The largest request body, compressed or not.
    pub(crate) max_body: usize,
    /// The bearer token clients must send, when set.
    pub(crate) token: Option<Arc<str>>,
    /// Requests whose bodies may be in memory at once (HTTP); with
    /// `max_body`, this bounds the memory requests take.
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
}

/// HTTP requests read at once; gRPC requests per connection.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// Connections each receiver keeps open at once, by default.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How long a connection may stay idle (nothing read or written), by default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The partial-success part of an answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) rejected: i64,
    pub(crate) message: String,
}

impl Shared {
    /// Whether an `authorization` header value is acceptable.
    pub(crate) fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some(given) = header
            .filter(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|h| &h[7..])
        else {
            return false;
        };
        given.ct_eq(token.as_bytes()).into()
    }

    /// Counts (and logs) a request rejected before anything was taken from it.
    pub(crate) fn count_rejected(&self, reason: Reason, message: &str) {
        tracing::warn!(
            ?reason,
            detail = message,
            "an export was refused; nothing of it was stored"
        );
        let r = &self.pipeline.metrics.rejected;
        match reason {
            Reason::Decode => &r.decode,
            Reason::ContentType => &r.content_type,
            Reason::TooLarge => &r.too_large,
            Reason::Unauthenticated => &r.unauthenticated,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a converted request: answers once its records are durable.
    /// Hands a decoded request to the pipeline; `deadline` ends its wait
    /// for room there (see [`crate::pipeline::QUEUE_WAIT`]).
    pub(crate) async fn accept(
        &self,
        signal: Signal,
        converted: otlp::convert::Converted,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, Unavailable> {
        let m = &self.pipeline.metrics;
        let n = (converted.items.len() + converted.errors.len()) as u64;
        match signal {
            Signal::Traces => m.spans_received.fetch_add(n, Ordering::Relaxed),
            Signal::Logs => m.logs_received.fetch_add(n, Ordering::Relaxed),
        };
        let mut message = converted.message();
        let mut rejected = converted.errors.len();
        let accepted = if converted.items.is_empty() {
            Default::default()
        } else {
            let items = converted.items.len() as u64;
            match self.pipeline.submit(converted.items, deadline).await {
                Ok(a) => a,
                Err(e) => {
                    m.rejected.unavailable(&e, items);
                    return Err(e);
                }
            }
        };
        m.duplicates
            .fetch_add(accepted.duplicates as u64, Ordering::Relaxed);
        rejected += accepted.rejected;
        if message.is_none() {
            message = accepted.message;
        }
        m.rejected
            .invalid
            .fetch_add(rejected as u64, Ordering::Relaxed);
        Ok(Outcome {
            rejected: rejected as i64,
            message: message.unwrap_or_default(),
        })
    }
}

/// Why a whole request was refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reason {
    Decode,
    ContentType,
    TooLarge,
    Unauthenticated,
}
