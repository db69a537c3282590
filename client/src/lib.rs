//! # cooplocker-client
//!
//! A Rust client for cooplocker, the multi-tenant
//! distributed-lock service: the whole public tenant API as typed methods of
//! [`Client`], the event stream as a reconnecting [`EventStream`], and
//! [`Lease`], a held resource that renews itself and says when it is lost.
//!
//! Every write carries an `Idempotency-Key`, generated per call and reused on
//! each of its retries, so a retry after a lost answer gets the first answer
//! (the same release token and fencing token) instead of a second grant.
//! `503`, `429` and gateway errors are retried with capped exponential
//! back-off and jitter, honouring `Retry-After`, within a [`RetryPolicy`].
//!
//! This crate does not depend on the server: it speaks the HTTP contract.
//!
//! # Example
//!
//! Acquire a lock (waiting up to 10 s), write with its fencing token, and
//! stop if the lease is lost before the work is done:
//!
//! ```no_run
//! use cooplocker_client::{Client, Error};
//! use std::time::Duration;
//!
//! # async fn write_report(_fencing_token: u64) {}
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("COOPLOCKER_API_KEY").unwrap_or_default())?;
//! let lease = client
//!     .lease("reports/daily")
//!     .ttl(Duration::from_secs(30))
//!     .wait(Duration::from_secs(10))
//!     .requester("report-job")
//!     .acquire()
//!     .await?;
//! println!("holding {} with fencing token {}", lease.resource(), lease.fencing_token());
//! tokio::select! {
//!     () = write_report(lease.fencing_token()) => {}
//!     reason = lease.lost() => eprintln!("lease lost: {reason}"),
//! }
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The raw batch endpoints are there too:
//!
//! ```no_run
//! use cooplocker_client::{BatchOptions, Client, Kind, ReleaseItem, ReserveItem, Status};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), cooplocker_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", "my-api-key")?;
//! let answer = client
//!     .reserve_with(
//!         &[ReserveItem::new("build-slots", "builder-1").ttl(60).kind(Kind::Semaphore(3))],
//!         &BatchOptions::default().wait_seconds(30),
//!     )
//!     .await?;
//! let slot = &answer.results[0];
//! if slot.status == Status::Reserved {
//!     let token = slot.release_token.clone().unwrap_or_default();
//!     client.unreserve(&[ReleaseItem::new("build-slots", "builder-1", token)]).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`client`](Client): the endpoints, the retry loop, the `Idempotency-Key`.
//! - [`lease`](Lease): acquire, renewal task, loss detection, release.
//! - [`events`](EventStream): the SSE reader with resume.
//! - [`types`](ReserveItem): the wire shapes; [`error`](Error): what fails.

mod client;
mod error;
mod events;
mod lease;
mod types;

pub use client::{Client, ClientBuilder, RetryPolicy};
pub use error::{ApiError, Detail, Error, ErrorCode};
pub use events::{Event, EventFilter, EventKind, EventStream};
pub use lease::{default_requester, Lease, LeaseBuilder, LeaseState, LostReason};
pub use types::{
    BatchAnswer, BatchOptions, ExtendItem, FenceResult, FenceStatus, Holder, Holders, ItemResult,
    Kind, ListQuery, Mode, ReleaseItem, Reservation, ReservationPage, ReserveItem, Status,
    ValidateItem,
};
