//! Receivers: how spans from other languages enter the pipeline.

pub(crate) mod otlp;
