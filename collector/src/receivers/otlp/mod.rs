//! OTLP: conversion of the protocol's messages into sealtrail items, and the
//! gRPC and HTTP receivers.

pub(crate) mod convert;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod json;
