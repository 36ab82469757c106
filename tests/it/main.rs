//! Braid's integration tests, one binary: each module starts real Braid processes (the
//! `braid` binary) and the real components they talk to (librdkafka's mock cluster, tansu,
//! moto, Prometheus, Chromium) on 127.0.0.1, each with its own topics, groups and temp dirs.
//! `common` holds what they share: the process harness, the reference fold, the fixtures.

mod common;

mod audit;
mod batch;
mod bench;
mod check;
mod deploy;
mod dev;
mod docs;
mod e2e;
mod formats;
mod fraud;
mod lines;
mod object_storage;
mod observe;
mod page;
mod parity;
mod registry;
mod run;
mod scaleout;
mod tansu;
mod torture;
