//! Waiting acquire (contract section 12): `?waitSeconds=N` on reserve. The
//! store puts the request in the line of each resource and hands it a freed
//! resource in the releaser's own step; this instance holds the long poll: it
//! learns of its grant from the store's grant feed or, at the latest, from its
//! poll every [`POLL_EVERY`] (which also keeps the waiter's heartbeat), and
//! when the wait ends — in time, at shutdown, or because the client went away
//! — it takes the waiter out of its lines.

use super::error::ApiError;
use crate::domain::{Kind, Millis, TenantId, Tier};
use crate::state::AppState;
use crate::store::{LeaveOutcome, ReserveItem, ReserveOutcome, Store, Wait, WaitState, WaiterId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest wait any request may ask (`waitSeconds`, locklock `wait`);
/// the tenant lease policy's `maxWaitSeconds` (default 60, contract section
/// 17) bounds it further, in the store's step.
pub const MAX_WAIT_SECONDS: u64 = crate::domain::policy::MAX_WAIT_SECONDS;
/// How often a waiter's instance looks at its record at the latest.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often a waiter checks whether the instance is shutting down and
/// whether its client is still there.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(50);

/// Waiting requests a tenant may have fleet-wide, per tier.
pub fn max_waiters(tier: Tier) -> usize {
    match tier {
        Tier::Free => 10,
        Tier::Starter => 100,
        Tier::Pro => 1_000,
        Tier::Enterprise => 10_000,
    }
}

/// The wait of a reserve batch, checked against its items: every item needs a
/// TTL (a grant nobody collects expires by itself), several items need
/// `atomic=true` (holding some while waiting for others is how multi-locks
/// deadlock), and no resource may appear twice (the batch could never be
/// granted together).
pub fn wait_of(
    seconds: Option<u64>,
    atomic: bool,
    items: &[ReserveItem],
    tier: Tier,
) -> Result<Option<Wait>, ApiError> {
    let Some(seconds) = seconds.filter(|s| *s > 0) else {
        return Ok(None);
    };
    if items.len() > 1 && !atomic {
        return Err(ApiError::invalid_field(
            "waitSeconds",
            "needs atomic=true for a batch of more than one item (all are granted together or none)",
        ));
    }
    let mut details = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if it.ttl.is_none() {
            details.push(super::wire::Detail::field(
                Some(i),
                "ttlSeconds",
                "is required with waitSeconds (a grant nobody collects must expire)",
            ));
        }
    }
    if !details.is_empty() {
        return Err(super::body::invalid_items(details));
    }
    // A resource named more than once: only as permits of one semaphore (at
    // most its limit) or as shared holds; anything else could never be
    // granted.
    let mut seen: std::collections::HashMap<&str, (Kind, usize)> = std::collections::HashMap::new();
    for it in items {
        let e = seen.entry(it.resource.as_str()).or_insert((it.kind, 0));
        e.1 += 1;
        if e.1 > 1 && (e.0 != it.kind || !it.kind.is_multi() || e.1 > it.kind.capacity()) {
            return Err(ApiError::invalid_field(
                "resource",
                "appears twice in a waiting batch, which could then never be granted (only a semaphore's permits, up to its limit, or shared holds may repeat)",
            ));
        }
    }
    Ok(Some(Wait {
        ms: seconds * 1000,
        waiter: WaiterId::generate(),
        max_waiters: max_waiters(tier),
    }))
}

/// How a wait ended.
pub enum WaitEnd {
    /// Granted: the RESERVED outcomes, and how long it waited.
    Granted(Vec<ReserveOutcome>, Millis),
    /// Not granted in time (or the instance is shutting down): per item its
    /// place in line and the holder.
    TimedOut {
        left: Vec<(u64, String, Option<Millis>)>,
        shutdown: bool,
    },
}

/// Takes the waiter out of its lines if the request goes away before its
/// wait is over (the client disconnected): a grant that came first is
/// released again.
struct LeaveOnDrop {
    store: Arc<dyn Store>,
    tenant: TenantId,
    waiter: WaiterId,
    armed: bool,
    /// How the wait ended, for `cooplocker_wait_seconds`: `cancelled` unless
    /// told otherwise (the client went away, or the request was dropped).
    outcome: &'static str,
    started: Instant,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        crate::metrics::waiters(-1);
        crate::metrics::wait_ended(self.outcome, self.started.elapsed().as_secs_f64());
        if !self.armed {
            return;
        }
        let (store, tenant, waiter) = (self.store.clone(), self.tenant.clone(), self.waiter);
        actix_web::rt::spawn(async move {
            if let Err(e) = store.wait_leave(&tenant, waiter, true).await {
                tracing::warn!(%tenant, error = %e, "a waiter whose client went away could not leave its lines; its heartbeat lapses in 15 s");
            }
        });
    }
}

/// Holds the request until its waiter is granted, its wait is over, or the
/// instance shuts down. `grants` was subscribed before the waiter entered, so
/// no grant is missed.
pub async fn wait_for_grant(
    state: &AppState,
    (tenant, peer): (&TenantId, Option<std::net::TcpStream>),
    wait: Wait,
    mut grants: tokio::sync::broadcast::Receiver<(TenantId, WaiterId)>,
    started: Instant,
) -> Result<WaitEnd, ApiError> {
    crate::metrics::waiters(1);
    let mut guard = LeaveOnDrop {
        store: state.store.clone(),
        tenant: tenant.clone(),
        waiter: wait.waiter,
        armed: true,
        outcome: "cancelled",
        started,
    };
    let deadline = tokio::time::Instant::from_std(started + Duration::from_millis(wait.ms));
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut shutdown = tokio::time::interval(SHUTDOWN_CHECK);
    let ended_by_shutdown = loop {
        tokio::select! {
            g = grants.recv() => match g {
                Ok((t, w)) if w == wait.waiter && &t == tenant => {}
                Ok(_) => continue,
                // Lagged or closed: look at the record.
                Err(_) => {}
            },
            _ = poll.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break false,
            _ = shutdown.tick() => {
                if state.shutting_down.load(Ordering::SeqCst) {
                    break true;
                }
                // The client went away: the guard takes the waiter out of
                // its lines (and releases a grant that crossed it).
                if peer.as_ref().is_some_and(crate::fanout::sse::peer_closed) {
                    return Err(ApiError::invalid("the client closed the connection"));
                }
                continue;
            }
        }
        match state.store.wait_poll(tenant, wait.waiter).await? {
            WaitState::Granted(rows) => {
                guard.armed = false;
                guard.outcome = "granted";
                // Collected: the record goes.
                let _ = state.store.wait_leave(tenant, wait.waiter, false).await;
                return Ok(WaitEnd::Granted(
                    rows,
                    started.elapsed().as_millis() as Millis,
                ));
            }
            WaitState::Waiting(_) => {}
            WaitState::Gone => break false,
        }
    };
    let left = state.store.wait_leave(tenant, wait.waiter, false).await?;
    guard.armed = false;
    guard.outcome = "timed_out";
    Ok(match left {
        LeaveOutcome::Granted(rows) => {
            guard.outcome = "granted";
            WaitEnd::Granted(rows, started.elapsed().as_millis() as Millis)
        }
        LeaveOutcome::Left(left) => WaitEnd::TimedOut {
            left,
            shutdown: ended_by_shutdown,
        },
        LeaveOutcome::Released | LeaveOutcome::Gone => WaitEnd::TimedOut {
            left: Vec::new(),
            shutdown: ended_by_shutdown,
        },
    })
}
