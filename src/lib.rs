//! # cooplocker
//!
//! A multi-tenant distributed-lock and resource-reservation service: stateless
//! actix-web instances over Redis (or an embedded in-process store).
//!
//! # Layout
//! (top to bottom: each module depends only on those below it; the module map
//! with every file is in `docs/architecture.md`)
//! - [`cli`], [`startup`]: the binary's commands; one instance
//!   ([`startup::Application`]) and its routes. [`lock`]: `cooplocker lock`,
//!   a command run under a lock, on the client library (`client/`,
//!   `cooplocker_client`), which does not depend on this crate.
//! - [`dashboard`]: the web dashboard (session, sign-in, pages).
//! - [`http`]: routes, the ready callers ([`http::extract`]), strict JSON and
//!   query parsing, the one error type, the wire shapes (`http::wire`) and the
//!   OpenAPI document built from them.
//! - [`state`]: what every handler of an instance shares ([`state::AppState`]).
//! - [`accounts`]: tenant and key changes, with the credential cache kept true.
//! - [`auth`]: API-key authentication with a fleet-invalidated cache.
//! - [`tokens`]: JWT exchange: verification of tenants' JWTs, service tokens.
//! - [`fanout`]: the per-instance fan-out of live events to SSE clients.
//! - [`store`]: the [`store::Store`] trait — [`store::Reservations`],
//!   [`store::Accounts`], [`store::EventLog`] and [`store::Upkeep`] — with the
//!   Redis implementation ([`store::redis`]: one module per concern, every key
//!   name in [`store::redis::keys`], the Lua scripts of `lua/` composed in
//!   [`store::redis::scripts`]), the connection over standalone, Cluster and
//!   Sentinel ([`store::topology`]), and the embedded one ([`store::embedded`]).
//! - [`events`]: lock events, the values the store writes.
//! - [`config`]: every setting, from flags and environment, validated at start.
//! - [`address`]: client addresses and failed authentications per address.
//! - [`domain`]: parse-don't-validate newtypes and plain data.
//! - [`metrics`], [`telemetry`](crate::telemetry): Prometheus metrics; logging.
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
pub mod lock;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
