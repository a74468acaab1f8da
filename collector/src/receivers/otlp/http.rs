//! OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, binary protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), gzip or
//! uncompressed; and `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Checks, in order, each answered with a `google.rpc.Status` body in the
//! request's encoding, before anything is taken: a bad or missing bearer
//! token → 401; another content type or encoding → 415; a body over
//! `--max-body`, compressed or after decompression → 413; a body that does
//! not decode → 400. A spool that cannot be written → 503 with `Retry-After`.

use std::io::Read;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::{convert, json};
use crate::pipeline::{Unavailable, NO_BODY_SLOT, QUEUE_WAIT};
use crate::receivers::{Outcome, Reason, Shared, Signal};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the body of OTLP/HTTP error answers.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// The router: OTLP, health, readiness, metrics.
pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        // The limit is applied by `export` itself, compressed and decompressed.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.pipeline.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&s.pipeline.metrics),
    )
        .into_response()
}

/// Any other path: a `google.rpc.Status` body, as OTLP asks of every 4xx.
async fn not_found(req: Request) -> Response {
    let enc = encoding(req.headers()).ok();
    let message = if req.uri().path() == "/v1/metrics" {
        "sealtrail archives traces and logs, not metrics: send metrics elsewhere, or set \
         OTEL_METRICS_EXPORTER=none"
            .to_owned()
    } else {
        format!(
            "no such endpoint {:?}: OTLP goes to POST /v1/traces and /v1/logs",
            req.uri().path()
        )
    };
    error(enc, StatusCode::NOT_FOUND, message)
}

/// A known path with another method.
async fn not_allowed(req: Request) -> Response {
    let enc = encoding(req.headers()).ok();
    let path = req.uri().path();
    let allow = if path.starts_with("/v1/") {
        "POST"
    } else {
        "GET"
    };
    let mut resp = error(
        enc,
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} {path} is not served: use {allow}", req.method()),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn traces(State(s): State<Shared>, req: Request) -> Response {
    export(&s, Signal::Traces, req).await
}

async fn logs(State(s): State<Shared>, req: Request) -> Response {
    export(&s, Signal::Logs, req).await
}

fn error(enc: Option<Encoding>, status: StatusCode, message: String) -> Response {
    // gRPC codes for the body, as OTLP/HTTP asks.
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
        _ => 14,
    };
    let body = RpcStatus { code, message };
    let mut resp = match enc {
        Some(Encoding::Protobuf) => {
            ([(header::CONTENT_TYPE, PROTOBUF)], body.encode_to_vec()).into_response()
        }
        _ => (
            [(header::CONTENT_TYPE, JSON)],
            serde_json::to_vec(&body).unwrap_or_default(),
        )
            .into_response(),
    };
    *resp.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn encoding(h: &HeaderMap) -> Result<Encoding, String> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(format!(
            "Content-Type must be {PROTOBUF} or {JSON}, got {:?}",
            ct
        )),
    }
}

async fn export(s: &Shared, signal: Signal, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let enc = encoding(&parts.headers).ok();
    let reject = |reason: Reason, status: StatusCode, msg: String| {
        s.count_rejected(reason, &msg);
        error(enc, status, msg)
    };
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !s.authorized(auth) {
        return reject(
            Reason::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required (Authorization: Bearer <token>)".into(),
        );
    }
    let enc = match encoding(&parts.headers) {
        Ok(e) => e,
        Err(msg) => return reject(Reason::ContentType, StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    let gzip = match parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return reject(
                Reason::ContentType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding must be gzip or absent, got {other:?}"),
            )
        }
    };
    let too_large = |what: &str| {
        format!(
            "the request body is larger than {} bytes{what} (--max-body)",
            s.max_body
        )
    };
    // Bounds the memory that request bodies take: at most MAX_IN_FLIGHT
    // bodies (each at most --max-body compressed, plus at most --max-body
    // decompressed).
    // A request that waits too long for its turn (a body slot, then room in
    // the pipeline's queue: one wait in all) is refused as retryable.
    let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
    let _permit = match tokio::time::timeout_at(deadline, s.in_flight.acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => {
            return error(
                Some(enc),
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down".into(),
            )
        }
        Err(_) => {
            let busy = Unavailable::Busy(NO_BODY_SLOT);
            s.pipeline.metrics.rejected.unavailable(&busy, 0);
            return error(Some(enc), StatusCode::SERVICE_UNAVAILABLE, busy.to_string());
        }
    };
    let body: Bytes = match axum::body::to_bytes(Body::new(body), s.max_body).await {
        Ok(b) => b,
        Err(e) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|src| src.is::<http_body_util::LengthLimitError>());
            return if limit {
                reject(
                    Reason::TooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    too_large(""),
                )
            } else {
                reject(
                    Reason::Decode,
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                )
            };
        }
    };
    let body = if gzip {
        let mut out = Vec::new();
        let limit = s.max_body as u64 + 1;
        match flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out)
        {
            Ok(n) if n as u64 >= limit => {
                return reject(
                    Reason::TooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    too_large(" once decompressed"),
                )
            }
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return reject(
                    Reason::Decode,
                    StatusCode::BAD_REQUEST,
                    format!("the gzip body is corrupt: {e}"),
                )
            }
        }
    } else {
        body
    };
    let bad = |e: String| {
        let what = match enc {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        };
        reject(
            Reason::Decode,
            StatusCode::BAD_REQUEST,
            format!("malformed OTLP {what}: {e}"),
        )
    };
    let converted = match (signal, enc) {
        (Signal::Traces, Encoding::Protobuf) => ExportTraceServiceRequest::decode(body)
            .map(convert::spans)
            .map_err(|e| e.to_string()),
        (Signal::Traces, Encoding::Json) => json::traces(&body).map(|(req, rejected)| {
            let mut c = convert::spans(req);
            c.errors
                .extend(rejected.into_iter().map(convert::ConvertError::Json));
            c
        }),
        (Signal::Logs, Encoding::Protobuf) => ExportLogsServiceRequest::decode(body)
            .map(convert::logs)
            .map_err(|e| e.to_string()),
        (Signal::Logs, Encoding::Json) => json::logs(&body).map(|(req, rejected)| {
            let mut c = convert::logs(req);
            c.errors
                .extend(rejected.into_iter().map(convert::ConvertError::Json));
            c
        }),
    };
    let converted = match converted {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    match s.accept(signal, converted, deadline).await {
        Ok(o) => answer(signal, enc, o),
        Err(e) => error(Some(enc), StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn answer(signal: Signal, enc: Encoding, o: Outcome) -> Response {
    let partial = o.rejected > 0;
    if !partial && enc == Encoding::Json {
        return ([(header::CONTENT_TYPE, JSON)], "{}").into_response();
    }
    let body = match (signal, enc) {
        (Signal::Traces, e) => {
            let r = ExportTraceServiceResponse {
                partial_success: partial.then_some(ExportTracePartialSuccess {
                    rejected_spans: o.rejected,
                    error_message: o.message,
                }),
            };
            match e {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&r).unwrap_or_default(),
            }
        }
        (Signal::Logs, e) => {
            let r = ExportLogsServiceResponse {
                partial_success: partial.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: o.rejected,
                    error_message: o.message,
                }),
            };
            match e {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&r).unwrap_or_default(),
            }
        }
    };
    let ct = match enc {
        Encoding::Protobuf => PROTOBUF,
        Encoding::Json => JSON,
    };
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// Serves OTLP/HTTP on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    shared: Shared,
    listener: crate::receivers::limit::Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}
