//! OTLP: conversion of the protocol's messages into sealtrail spans. The gRPC
//! and HTTP receivers (issue 4) will sit beside this module.

pub(crate) mod convert;
