#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod archive;
pub mod canonical;
pub mod chain;
pub mod digest;
mod error;
pub mod keys;
pub mod layer;
pub mod map;
pub mod merkle;
pub mod pipeline;
pub mod read;
pub mod record;
pub mod recover;
pub mod seal;
pub mod spool;
pub mod verify;
pub mod writer;

pub use archive::Archive;
pub use digest::Digest;
pub use error::{Error, Result};
pub use layer::{layer, AuditLayer, AuditLayerBuilder, FlushGuard};
pub use record::{Attributes, Event, Kind, Status, StatusCode, TraceRecord, Value};
pub use verify::{verify, Finding, Problem, Report, VerifyOptions};
pub use writer::{Writer, WriterOptions};
