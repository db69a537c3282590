//! [`Lease`]: a held resource that keeps itself alive. Acquiring reserves it
//! (waiting in the service's fair line if asked), a background task extends it
//! every `ttl/3`, and the lease reports through [`Lease::lost`] the moment it
//! can no longer be trusted: an extend answered `NOT_HELD` or `INVALID_TOKEN`
//! (released by an operator, expired), or no extend succeeded before the
//! hold's expiry as this process measures it (from before the request that
//! set it, so the local view ends no later than the service's).

use crate::client::Client;
use crate::error::Error;
use crate::types::{BatchOptions, ExtendItem, ItemResult, Kind, ReleaseItem, ReserveItem, Status};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest `waitSeconds` of one request: the service's default
/// `maxWaitSeconds`. A longer wait is several requests in a row (each one
/// rejoins the back of the line).
const MAX_WAIT_PER_REQUEST: u64 = 60;

/// `<hostname>:<pid>`: who this process is, as a requester.
pub fn default_requester() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Why a lease ended without [`Lease::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// An extend answered `NOT_HELD`: released by someone else (an operator's
    /// force release) or expired.
    NotHeld,
    /// An extend answered `INVALID_TOKEN`: another holder has it now.
    InvalidToken,
    /// No extend succeeded before the hold's expiry.
    Expired,
    /// The renewal task stopped (its runtime shut down); nothing renews it.
    RenewalStopped,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotHeld => "the service no longer holds it (NOT_HELD)",
            Self::InvalidToken => "another holder has it (INVALID_TOKEN)",
            Self::Expired => "no extend succeeded before it expired",
            Self::RenewalStopped => "its renewal stopped",
        })
    }
}

/// What a lease's renewal task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Held; `expires_at` as the last reserve or extend answered it.
    Held {
        expires_at: Option<String>,
        renewals: u64,
    },
    Lost(LostReason),
}

/// Configures and acquires a [`Lease`]; from [`Client::lease`].
#[derive(Debug, Clone)]
pub struct LeaseBuilder {
    client: Client,
    resource: String,
    requester: Option<String>,
    ttl: Duration,
    wait: Duration,
    kind: Kind,
    renew_every: Option<Duration>,
}

impl LeaseBuilder {
    pub(crate) fn new(client: Client, resource: String) -> Self {
        Self {
            client,
            resource,
            requester: None,
            ttl: Duration::from_secs(30),
            wait: Duration::ZERO,
            kind: Kind::Exclusive,
            renew_every: None,
        }
    }

    /// The hold's TTL, renewed every third of it (default 30 s; whole
    /// seconds, at least 1).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Wait up to this long in line when it is held (default: do not wait).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Who holds it (default [`default_requester`]).
    pub fn requester(mut self, requester: impl Into<String>) -> Self {
        self.requester = Some(requester.into());
        self
    }

    /// Exclusive (default), shared, or a semaphore permit.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// Extend this often instead of every `ttl/3`.
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// Reserves the resource, waiting if asked; [`Error::NotAcquired`] when
    /// it stays held (or is held as another kind) past the wait.
    pub async fn acquire(self) -> Result<Lease, Error> {
        let ttl_seconds = self.ttl.as_secs_f64().ceil() as u64;
        if ttl_seconds == 0 {
            return Err(Error::InvalidArgument(
                "a lease needs a TTL of at least 1 s".into(),
            ));
        }
        let ttl = Duration::from_secs(ttl_seconds);
        let every = self
            .renew_every
            .unwrap_or(ttl / 3)
            .max(Duration::from_millis(50));
        let requester = self.requester.unwrap_or_else(default_requester);
        let item = ReserveItem::new(&self.resource, &requester)
            .ttl(ttl_seconds)
            .kind(self.kind);
        let give_up = Instant::now() + self.wait;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let wait_seconds = (left.as_secs_f64().ceil() as u64).min(MAX_WAIT_PER_REQUEST);
            let sent = Instant::now();
            let answer = self
                .client
                .reserve_with(
                    std::slice::from_ref(&item),
                    &BatchOptions::default().wait_seconds(wait_seconds),
                )
                .await?;
            let result = answer
                .results
                .into_iter()
                .next()
                .ok_or_else(|| Error::Decode {
                    status: 200,
                    message: "reserve answered no result".into(),
                })?;
            match result.status {
                Status::Reserved => {
                    return Ok(Lease::start(
                        self.client,
                        result,
                        requester,
                        ttl,
                        every,
                        sent,
                    ));
                }
                // One request of a longer wait, or the instance was shutting
                // down: go on while there is time.
                Status::TimedOut if Instant::now() < give_up => {
                    if sent.elapsed() < Duration::from_millis(200) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                _ => {
                    return Err(Error::NotAcquired {
                        resource: result.resource.clone(),
                        status: result.status.as_str().to_string(),
                        held_by: result.held_by.clone(),
                        result: Box::new(result),
                    })
                }
            }
        }
    }
}

/// A held resource, extended in the background until [`release`](Self::release)
/// or drop (which releases it best-effort on the current tokio runtime).
#[derive(Debug)]
pub struct Lease {
    client: Client,
    reserved: ItemResult,
    requester: String,
    release_token: String,
    fencing_token: u64,
    state: watch::Receiver<LeaseState>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl Lease {
    fn start(
        client: Client,
        reserved: ItemResult,
        requester: String,
        ttl: Duration,
        every: Duration,
        sent: Instant,
    ) -> Self {
        let release_token = reserved.release_token.clone().unwrap_or_default();
        let fencing_token = reserved.fencing_token.unwrap_or_default();
        let (tx, state) = watch::channel(LeaseState::Held {
            expires_at: reserved.expires_at.clone(),
            renewals: 0,
        });
        let item = ExtendItem::new(
            &reserved.resource,
            &requester,
            &release_token,
            ttl.as_secs(),
        );
        let renewer = tokio::spawn(renew(client.clone(), item, ttl, every, sent, tx));
        Self {
            client,
            reserved,
            requester,
            release_token,
            fencing_token,
            state,
            renewer: Some(renewer),
            released: false,
        }
    }

    pub fn resource(&self) -> &str {
        &self.reserved.resource
    }

    pub fn requester(&self) -> &str {
        &self.requester
    }

    /// Strictly greater than every token the resource was given before: send
    /// it with every write to what the lock protects (and check it there,
    /// e.g. with [`Client::validate`]).
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// What unreserve and extend need.
    pub fn release_token(&self) -> &str {
        &self.release_token
    }

    /// The `RESERVED` result that granted it.
    pub fn reserved(&self) -> &ItemResult {
        &self.reserved
    }

    /// What the renewal task reports now.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver of every change of [`state`](Self::state), for `select!`
    /// loops that outlive a borrow of the lease.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), LeaseState::Lost(_))
    }

    /// Resolves when the lease is lost; pending while it is held.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.state.clone();
        loop {
            if let LeaseState::Lost(reason) = &*rx.borrow_and_update() {
                return *reason;
            }
            if rx.changed().await.is_err() {
                return LostReason::RenewalStopped;
            }
        }
    }

    /// Stops renewing and unreserves. `Ok(true)`: it was held and is free
    /// now; `Ok(false)`: it was no longer held (lost in the meantime).
    pub async fn release(mut self) -> Result<bool, Error> {
        self.stop_renewing().await;
        self.released = true;
        let item = ReleaseItem::new(self.resource(), &self.requester, &self.release_token);
        let answer = self.client.unreserve(&[item]).await?;
        Ok(answer
            .results
            .first()
            .is_some_and(|r| r.status == Status::Unreserved))
    }

    async fn stop_renewing(&mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
            // An extend still in flight is cancelled with the task, so it
            // cannot land after the unreserve.
            let _ = task.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
        if self.released || self.is_lost() {
            return;
        }
        // Best effort: without a runtime (or once it shuts down) the hold
        // simply expires at its TTL.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let item = ReleaseItem::new(self.resource(), &self.requester, &self.release_token);
            rt.spawn(async move {
                let _ = client.unreserve(&[item]).await;
            });
        }
    }
}

/// The renewal task: extends every `every`, and reports the loss.
async fn renew(
    client: Client,
    item: ExtendItem,
    ttl: Duration,
    every: Duration,
    acquired: Instant,
    tx: watch::Sender<LeaseState>,
) {
    let mut expires = acquired + ttl;
    let mut next = acquired + every;
    let mut renewals = 0;
    // After a failed attempt: try again soon, well before the expiry.
    let again = (every / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep_until(next.min(expires)).await;
        if Instant::now() >= expires {
            tx.send_replace(LeaseState::Lost(LostReason::Expired));
            return;
        }
        let sent = Instant::now();
        let outcome =
            tokio::time::timeout_at(expires, client.extend(std::slice::from_ref(&item))).await;
        let result = match outcome {
            Err(_) => {
                tx.send_replace(LeaseState::Lost(LostReason::Expired));
                return;
            }
            Ok(Ok(answer)) => answer.results.into_iter().next(),
            Ok(Err(_)) => None,
        };
        match result.as_ref().map(|r| r.status) {
            Some(Status::Extended) => {
                renewals += 1;
                expires = sent + ttl;
                next = sent + every;
                tx.send_replace(LeaseState::Held {
                    expires_at: result.and_then(|r| r.expires_at),
                    renewals,
                });
            }
            Some(Status::NotHeld) => {
                tx.send_replace(LeaseState::Lost(LostReason::NotHeld));
                return;
            }
            Some(Status::InvalidToken) => {
                tx.send_replace(LeaseState::Lost(LostReason::InvalidToken));
                return;
            }
            _ => next = Instant::now() + again,
        }
    }
}
