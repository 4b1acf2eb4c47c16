//! devpop: an HTTP git server that turns `git push` into a deployment on Kubernetes.
//!
//! The pipeline, in the order a push travels through it (see ARCHITECTURE.md):
//! [`transport`] (git smart HTTP) -> [`hook`] (pre-receive, in the quarantine) ->
//! [`validation`] (pure checks) -> rendering -> applying -> records / console.
//!
//! `unsafe` is denied everywhere but in the few places a well-kept crate cannot cover
//! (`posix_spawn` in `transport::spawn`, libgit2's global options), each with its SAFETY note.
#![deny(unsafe_code)]

pub mod api;
pub mod applying;
pub mod auth;
pub mod checks;
pub mod console;
pub mod edits;
pub mod environment_config;
pub mod hook;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod packages;
pub mod records;
pub mod rendering;
pub mod repos;
pub mod sandbox;
pub mod server;
pub mod settings;
pub mod source;
pub mod transport;
pub mod treewalk;
pub mod validation;
pub mod web;
