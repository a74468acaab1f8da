//! OTLP/gRPC: the TraceService and LogsService.
//!
//! Status codes: a bad or missing bearer token is UNAUTHENTICATED; a request
//! larger than `--max-body` (after decompression too) is RESOURCE_EXHAUSTED;
//! a message that does not decode is INVALID_ARGUMENT; a spool that cannot
//! be written is UNAVAILABLE (retryable). tonic answers the middle two of its
//! own accord with OUT_OF_RANGE and INTERNAL: [`StatusFix`] rewrites them to
//! the codes the OTLP specification asks for, before anything was taken.

use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::convert;
use crate::receivers::{Outcome, Reason, Shared, Signal};

#[derive(Clone, Debug)]
struct Otlp(Shared);

const UNAUTHENTICATED: &str = "a valid bearer token is required (authorization: Bearer <token>)";

impl Otlp {
    async fn take(&self, signal: Signal, c: convert::Converted) -> Result<Outcome, Status> {
        self.0
            .accept(
                signal,
                c,
                tokio::time::Instant::now() + crate::pipeline::QUEUE_WAIT,
            )
            .await
            .map_err(|e| unavailable(e.to_string()))
    }
}

/// How long a client is asked to wait before it retries a refused export
/// (as HTTP's `Retry-After`).
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// `UNAVAILABLE` (retryable), with a `google.rpc.RetryInfo` detail saying
/// when to retry, which the OpenTelemetry SDKs read.
fn unavailable(message: String) -> Status {
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoDuration {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<ProtoDuration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: RETRY_AFTER.as_secs() as i64,
            nanos: RETRY_AFTER.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: tonic::Code::Unavailable as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Unavailable,
        message,
        status.encode_to_vec().into(),
    )
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let c = convert::spans(request.into_inner());
        let o = self.take(Signal::Traces, c).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (o.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: o.rejected,
                error_message: o.message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let c = convert::logs(request.into_inner());
        let o = self.take(Signal::Logs, c).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (o.rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: o.rejected,
                error_message: o.message,
            }),
        }))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    shared: Shared,
    listener: crate::receivers::limit::Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = shared.max_body;
    let fix = shared.clone();
    let svc = Otlp(shared);
    let traces = TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let logs = LogsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(crate::receivers::MAX_IN_FLIGHT)
        .layer(tower_layer::layer_fn(move |s| StatusFix(s, fix.clone())))
        .add_service(traces)
        .add_service(logs)
        .serve_with_incoming_shutdown(listener.incoming(), shutdown)
        .await
}

/// Rewrites tonic's own answers to requests it could not decode (see the
/// module documentation). Only trailers-only answers, sent before the
/// service saw the request, carry these codes and messages.
#[derive(Clone, Debug)]
struct StatusFix<S>(S, Shared);

impl<S, B, R> tower_service::Service<http::Request<B>> for StatusFix<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The token is checked before the message is read and decoded.
        let auth = req.headers().get("authorization").map(|v| v.as_bytes());
        if !self.1.authorized(auth) {
            self.1
                .count_rejected(Reason::Unauthenticated, UNAUTHENTICATED);
            let resp = Status::unauthenticated(UNAUTHENTICATED).into_http();
            return Box::pin(async move { Ok(resp) });
        }
        let fut = self.0.call(req);
        let shared = self.1.clone();
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some((reason, msg)) = fix_status(resp.headers_mut()) {
                shared.count_rejected(reason, &msg);
            }
            Ok(resp)
        })
    }
}

/// Rewrites the status of a request tonic refused; returns why, if it did.
fn fix_status(h: &mut http::HeaderMap) -> Option<(Reason, String)> {
    let code = h.get("grpc-status")?.as_bytes();
    let msg = percent_decode(h.get("grpc-message")?.as_bytes());
    let (code, reason) = match code {
        b"11" if msg.contains("message length too large") => ("8", Reason::TooLarge), // RESOURCE_EXHAUSTED
        // Already RESOURCE_EXHAUSTED: counted, not rewritten.
        b"8" if msg.contains("exceeded while decompressing") => ("8", Reason::TooLarge),
        b"13"
            if msg.contains("failed to decode Protobuf message")
                || msg.starts_with("Error decompressing")
                || msg.starts_with("Unexpected EOF decoding stream")
                || msg.starts_with("Missing request message") =>
        {
            ("3", Reason::Decode) // INVALID_ARGUMENT
        }
        // The gRPC compression spec asks for INTERNAL here: counted, not rewritten.
        b"13" if msg.starts_with("protocol error: received message with") => ("13", Reason::Decode),
        _ => return None,
    };
    h.insert("grpc-status", http::HeaderValue::from_static(code));
    Some((reason, msg))
}

fn percent_decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_decode_answers_get_the_otlp_codes() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "failed%20to%20decode%20Protobuf%20message:%20buffer%20underflow",
            ),
        );
        assert!(matches!(fix_status(&mut h), Some((Reason::Decode, _))));
        assert_eq!(h["grpc-status"], "3");
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"),
        );
        assert!(matches!(fix_status(&mut h), Some((Reason::TooLarge, _))));
        assert_eq!(h["grpc-status"], "8");
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
        h.insert("grpc-message", http::HeaderValue::from_static("other"));
        assert!(fix_status(&mut h).is_none());
        assert_eq!(h["grpc-status"], "13");
    }
}
