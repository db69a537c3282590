//! # cooplocker
//!
//! A multi-tenant distributed-lock and resource-reservation service: stateless
//! actix-web instances over Redis (or an embedded in-process store).
//!
//! # Layout
//! - [`config`]: every setting, from flags and environment, validated at start.
//! - [`startup`]: builds one instance ([`startup::Application`]) and its routes.
//! - [`http`]: routes, extractors, strict JSON/query parsing, the one error type,
//!   the wire shapes (`http::wire`) and the OpenAPI document built from them.
//! - [`auth`]: API-key authentication with a fleet-invalidated cache.
//! - [`domain`]: parse-don't-validate newtypes and plain data.
//! - [`metrics`]: Prometheus metrics.
//! - [`events`]: lock events, the per-instance fan-out hub and the SSE stream.
//! - [`store`]: the [`store::Store`] trait, its Redis implementation (Lua scripts
//!   in `lua/`) and the embedded one.
//! - [`dashboard`]: the web dashboard (OIDC sign-in, keys, live reservations).
//! - [`cli`]: the `cooplocker admin ...` subcommands.
//! - [`telemetry`](crate::telemetry): logging.
//! - [`tokens`]: JWT exchange: tenant JWT settings and verification, service tokens.

pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
