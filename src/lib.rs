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
//! - [`accounts`]: the tenant and key changes the admin API and the dashboard
//!   share, each dropping stale cached credentials in one place.
//! - [`domain`]: parse-don't-validate newtypes and plain data.
//! - [`metrics`]: Prometheus metrics.
//! - [`events`]: lock events, the per-instance fan-out hub and the SSE stream.
//! - [`store`]: the [`store::Store`] trait — [`store::Reservations`],
//!   [`store::Accounts`], [`store::EventLog`] and [`store::Upkeep`] — with the
//!   Redis implementation ([`store::redis`]: one module per concern, every key
//!   name in [`store::redis::keys`], the Lua scripts of `lua/` composed in
//!   [`store::redis::scripts`]), the connection over standalone, Cluster and
//!   Sentinel ([`store::topology`]), and the embedded one ([`store::embedded`]).
//! - [`dashboard`]: the web dashboard (OIDC sign-in, keys, live reservations).
//! - [`cli`]: the command line (settings and subcommand) and the
//!   `cooplocker admin ...` and `healthcheck` subcommands.
//! - [`telemetry`](crate::telemetry): logging.
//! - [`tokens`]: JWT exchange: tenant JWT settings and verification, service tokens.
//!
//! # The path of one request
//! A reserve: the middleware (`http::middleware`: request id, log line,
//! metrics) → the handler's extractors (the caller from the verified
//! credential, the strictly parsed body) → the handler (`http::reservations`)
//! → [`store::Reservations::reserve`] → on Redis, one `EVALSHA` of the composed
//! `reserve` script (`lua/README.md`), which checks the rate limit, writes the
//! holds, indexes and events in one atomic step and answers one row per item →
//! the reply decoded into domain outcomes (`store::redis::replies`) → the JSON
//! answer. The data model and the fleet's moving parts: `docs/architecture.md`.

pub mod accounts;
pub mod address;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod events;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
