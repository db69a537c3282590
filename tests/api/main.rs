//! The one integration-test binary. Behavioural tests run against both stores
//! (`both_stores!`); fleet and fault tests run several instances on one real
//! Redis spawned by the harness.

mod helpers;

mod admin;
mod atomic;
mod bad_input;
mod cli;
mod client;
mod dashboard;
mod data_model;
mod drain;
mod equivalence;
mod events;
mod expiring;
mod fences;
mod fleet;
mod ha;
mod harness;
mod idempotency;
mod jwt;
mod kinds;
mod lock_command;
mod locklock;
mod ops;
mod ops_kit;
mod policy;
mod rate_limits;
mod reservations;
mod semaphore_fleet;
mod topologies;
mod waiting;
