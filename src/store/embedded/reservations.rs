//! The reservation operations: one atomic step each under the state lock; the
//! trait methods count the request against its quota first.

use super::idempotency::{now_ms, Keep};
use super::*;

/// All or nothing (contract section 13): given each item's failure (`None`:
/// it would succeed), the batch's answer when any item fails — the failures,
/// and `aborted` for the others — or `None` when every item would succeed.
pub(super) fn all_or_nothing<O: Clone>(
    verdicts: impl Iterator<Item = Option<O>>,
    aborted: O,
) -> Option<Vec<O>> {
    let verdicts: Vec<Option<O>> = verdicts.collect();
    if verdicts.iter().all(Option::is_none) {
        return None;
    }
    Some(
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| aborted.clone()))
            .collect(),
    )
}

/// Why a release item fails on the lock it finds, or `None` when it succeeds.
fn release_verdict(lock: Option<&Lock>, it: &ReleaseItem) -> Option<ReleaseOutcome> {
    match lock {
        None => Some(ReleaseOutcome::NotHeld),
        Some(l) if !l.matches(&it.requester, &it.release_token) => {
            Some(ReleaseOutcome::InvalidToken)
        }
        Some(_) => None,
    }
}

/// Why an extend item fails on the lock it finds, or `None` when it succeeds.
fn extend_verdict(lock: Option<&Lock>, it: &ExtendItem) -> Option<ExtendOutcome> {
    match lock {
        None => Some(ExtendOutcome::NotHeld),
        Some(l) if !l.matches(&it.requester, &it.release_token) => {
            Some(ExtendOutcome::InvalidToken)
        }
        Some(_) => None,
    }
}

/// The operations, as one atomic step each under the state lock; the trait
/// methods count the request against its quota first.
impl EmbeddedStore {
    fn reserve_now(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
        mode: BatchMode,
    ) -> StoreResult<Vec<ReserveOutcome>> {
        self.reserve_sync(caller, items, None, (None, None), mode)?
            .map_err(|_| StoreError::Internal("reserve refused without a cap".into()))
    }

    fn unreserve_now(
        &self,
        caller: &Caller,
        items: &[ReleaseItem],
        mode: BatchMode,
    ) -> StoreResult<Vec<ReleaseOutcome>> {
        let mut st = self.state();
        let now_us = st.now_us();
        let now_ms = now_us / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        if mode.atomic {
            let mut gone = HashSet::new();
            let verdicts = items.iter().map(|it| {
                let res = it.resource.as_str();
                let v = if gone.contains(res) {
                    Some(ReleaseOutcome::NotHeld)
                } else {
                    release_verdict(ts.live_lock(res, now_ms), it)
                };
                if v.is_none() {
                    gone.insert(res);
                }
                v
            });
            if let Some(aborted) = all_or_nothing(verdicts, ReleaseOutcome::Aborted) {
                return Ok(aborted);
            }
        }
        let out = items
            .iter()
            .map(|it| {
                let res = it.resource.as_str();
                match release_verdict(ts.live_lock(res, now_ms), it) {
                    Some(failed) => failed,
                    None => {
                        if let Some(old) = ts.drop_lock(res) {
                            ts.emit(
                                retain,
                                now_ms,
                                EventKind::Unreserved,
                                res,
                                &old,
                                &caller.label,
                            );
                        }
                        // The head of the resource's line gets it, in this step.
                        ts.handover(res, now_us, retain);
                        ReleaseOutcome::Unreserved
                    }
                }
            })
            .collect();
        self.publish(&caller.tenant, ts);
        Ok(out)
    }

    fn extend_now(
        &self,
        caller: &Caller,
        items: &[ExtendItem],
        mode: BatchMode,
    ) -> StoreResult<Vec<ExtendOutcome>> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        if mode.atomic {
            // Extending never changes another item's answer.
            let verdicts = items
                .iter()
                .map(|it| extend_verdict(ts.live_lock(it.resource.as_str(), now_ms), it));
            if let Some(aborted) = all_or_nothing(verdicts, ExtendOutcome::Aborted) {
                return Ok(aborted);
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let res = it.resource.as_str();
            let outcome = match extend_verdict(ts.live_lock(res, now_ms), it) {
                Some(failed) => failed,
                None => {
                    let ea = now_ms + it.ttl.millis();
                    if let Some(lock) = ts.locks.get_mut(res) {
                        if let Some(old) = lock.expires_at.replace(ea) {
                            ts.expiries.remove(&(old, res.to_string()));
                        }
                        let snapshot = lock.clone();
                        ts.expiries.insert((ea, res.to_string()));
                        ts.emit(
                            retain,
                            now_ms,
                            EventKind::Extended,
                            res,
                            &snapshot,
                            &caller.label,
                        );
                    }
                    ExtendOutcome::Extended { expires_at: ea }
                }
            };
            out.push(outcome);
        }
        self.publish(&caller.tenant, ts);
        Ok(out)
    }

    /// The hold of each resource active now (`None`: free).
    fn holdings_now<'a>(
        &self,
        tenant: &TenantId,
        resources: impl Iterator<Item = &'a Resource>,
    ) -> Vec<(Option<Holding>, u64)> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let ts = st.tenants.get(tenant);
        resources
            .map(|r| {
                let held = ts
                    .and_then(|ts| ts.live_lock(r.as_str(), now_ms))
                    .and_then(|l| l.holding(r.as_str()));
                (held, ts.map_or(0, |ts| ts.waits.len_of(r.as_str())))
            })
            .collect()
    }

    fn check_now(
        &self,
        tenant: &TenantId,
        resources: &[Resource],
    ) -> StoreResult<Vec<CheckOutcome>> {
        Ok(self
            .holdings_now(tenant, resources.iter())
            .into_iter()
            .map(|(h, waiting)| match h {
                Some(h) => CheckOutcome::Held(h, waiting),
                None => CheckOutcome::Free(waiting),
            })
            .collect())
    }

    fn validate_now(
        &self,
        tenant: &TenantId,
        items: &[FenceItem],
    ) -> StoreResult<Vec<FenceOutcome>> {
        let holds = self.holdings_now(tenant, items.iter().map(|it| &it.resource));
        Ok(items
            .iter()
            .zip(holds)
            .map(|(it, (h, _))| match h {
                Some(h) if h.fencing_token == it.fencing_token => FenceOutcome::Current {
                    requester: h.requester,
                    expires_at: h.expires_at,
                },
                Some(h) => FenceOutcome::Stale {
                    holder: Some(h.fencing_token),
                },
                None => FenceOutcome::Stale { holder: None },
            })
            .collect())
    }

    fn list_now(&self, tenant: &TenantId, query: &ListQuery) -> StoreResult<ListPage> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let Some(ts) = st.tenants.get(tenant) else {
            return Ok(ListPage {
                items: Vec::new(),
                next_after: None,
            });
        };
        let prefix = query.prefix.as_ref().map_or("", |p| p.as_str());
        let lower = match &query.after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.to_string()),
        };
        let names: Box<dyn Iterator<Item = &String>> = match &query.requester {
            Some(rq) => {
                let rq = rq.as_str().to_string();
                let lo = match lower {
                    Bound::Excluded(s) => Bound::Excluded((rq.clone(), s)),
                    Bound::Included(s) => Bound::Included((rq.clone(), s)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                Box::new(
                    ts.by_requester
                        .range((lo, Bound::Unbounded))
                        .take_while(move |(q, _)| *q == rq)
                        .map(|(_, r)| r),
                )
            }
            None => Box::new(ts.locks.range((lower, Bound::Unbounded)).map(|(r, _)| r)),
        };
        let mut items = Vec::new();
        let mut next_after = None;
        for name in names.take_while(|n| n.starts_with(prefix)) {
            let Some(h) = ts.live_lock(name, now_ms).and_then(|l| l.holding(name)) else {
                continue;
            };
            if items.len() == query.limit {
                next_after = items
                    .last()
                    .map(|h: &Holding| h.resource.as_str().to_string());
                break;
            }
            items.push(h);
        }
        Ok(ListPage { items, next_after })
    }

    fn release_by_name_now(
        &self,
        tenant: &TenantId,
        resource: &Resource,
        by: &Releaser,
    ) -> StoreResult<ReleaseByName> {
        let mut st = self.state();
        let now_us = st.now_us();
        let now_ms = now_us / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(tenant) else {
            return Ok(ReleaseByName::NotHeld);
        };
        let res = resource.as_str();
        let Some(lock) = ts.live_lock(res, now_ms) else {
            return Ok(ReleaseByName::NotHeld);
        };
        let (kind, label) = match by {
            Releaser::Admin => (EventKind::ForceReleased, "admin".to_string()),
            Releaser::Locklock { label, secret_hash } => {
                if !lock.locklock {
                    return Ok(ReleaseByName::NotALock);
                }
                if let Some(expected) = &lock.secret_hash {
                    let presented = secret_hash.as_deref().unwrap_or("");
                    if !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                        return Ok(ReleaseByName::WrongSecret);
                    }
                }
                (EventKind::Unreserved, label.clone())
            }
        };
        let Some(old) = ts.drop_lock(res) else {
            return Ok(ReleaseByName::NotHeld);
        };
        ts.emit(retain, now_ms, kind, res, &old, &label);
        // The head of the resource's line gets it, in this step.
        ts.handover(res, now_us, retain);
        self.publish(tenant, ts);
        Ok(ReleaseByName::Released)
    }

    fn lock_now(&self, caller: &Caller, req: &LockRequest) -> StoreResult<LockOutcome> {
        let item = ReserveItem {
            resource: req.resource.clone(),
            requester: req.requester.clone(),
            ttl: Some(req.ttl),
            kind: Kind::Exclusive,
        };
        let caps = (req.max_held, req.max_per_requester);
        let outcome = match self.reserve_sync(
            caller,
            &[item],
            Some(req.secret_hash.clone()),
            caps,
            BatchMode {
                atomic: false,
                wait: req.wait,
            },
        )? {
            Ok(mut v) => v.pop(),
            Err(refused) => return Ok(refused),
        };
        let Some(outcome) = outcome else {
            return Err(StoreError::Internal("lock: no outcome".into()));
        };
        Ok(match outcome {
            ReserveOutcome::Reserved {
                expires_at,
                fencing_token,
                ..
            } => LockOutcome::Acquired {
                expires_at: expires_at.unwrap_or(0),
                fencing_token,
            },
            ReserveOutcome::AlreadyHeld { .. }
            | ReserveOutcome::LimitMismatch { .. }
            | ReserveOutcome::Aborted => LockOutcome::Locked,
            ReserveOutcome::Queued { .. } => LockOutcome::Queued,
        })
    }
}

impl EmbeddedStore {
    /// A batch operation: counted against the caller's rate limit, then run
    /// (an empty batch is counted, nothing else, as the Redis store does).
    fn batch<I, T: Clone + Send + Sync + 'static>(
        &self,
        caller: &Caller,
        items: &[I],
        run: impl FnOnce() -> StoreResult<Vec<T>>,
        keep: impl FnOnce(&Vec<T>) -> Keep,
    ) -> StoreResult<Metered<Vec<T>>> {
        if items.is_empty() {
            let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
            return Ok(Metered::new(Vec::new(), rate));
        }
        self.idempotent(
            caller,
            || {
                let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
                Ok(Metered::new(run()?, rate))
            },
            keep,
        )
    }
}

#[async_trait]
impl Reservations for EmbeddedStore {
    async fn reserve(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReserveOutcome>>> {
        // A queued answer is no answer yet: the record waits for the grant
        // (as lua/reserve.lua's idem_pending).
        let until = mode.wait.map(|w| now_ms() + w.ms);
        self.batch(
            caller,
            items,
            || self.reserve_now(caller, items, mode),
            |v| match until {
                Some(until) if v.iter().any(|o| matches!(o, ReserveOutcome::Queued { .. })) => {
                    Keep::Pending(until)
                }
                _ => Keep::Record,
            },
        )
    }

    async fn unreserve(
        &self,
        caller: &Caller,
        items: &[ReleaseItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReleaseOutcome>>> {
        self.batch(
            caller,
            items,
            || self.unreserve_now(caller, items, mode),
            |_| Keep::Record,
        )
    }

    async fn extend(
        &self,
        caller: &Caller,
        items: &[ExtendItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ExtendOutcome>>> {
        self.batch(
            caller,
            items,
            || self.extend_now(caller, items, mode),
            |_| Keep::Record,
        )
    }

    async fn check(
        &self,
        caller: &Caller,
        resources: &[Resource],
    ) -> StoreResult<Metered<Vec<CheckOutcome>>> {
        self.batch(
            caller,
            resources,
            || self.check_now(&caller.tenant, resources),
            |_| Keep::Record,
        )
    }

    async fn validate(
        &self,
        caller: &Caller,
        items: &[FenceItem],
    ) -> StoreResult<Metered<Vec<FenceOutcome>>> {
        self.batch(
            caller,
            items,
            || self.validate_now(&caller.tenant, items),
            |_| Keep::Record,
        )
    }

    async fn list(&self, caller: &Caller, query: &ListQuery) -> StoreResult<Metered<ListPage>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered::new(self.list_now(&caller.tenant, query)?, rate))
    }

    fn grants(&self) -> tokio::sync::broadcast::Receiver<(TenantId, WaiterId)> {
        self.inner.grants.subscribe()
    }

    async fn settle(&self, caller: &Caller, how: Settled) -> StoreResult<()> {
        let answer: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> = match how {
            Settled::Reserve(rows) => Some(std::sync::Arc::new(rows)),
            Settled::Lock(outcome) => Some(std::sync::Arc::new(outcome)),
            Settled::Nothing => None,
        };
        self.settle_record(caller, answer);
        Ok(())
    }

    async fn wait_poll(&self, tenant: &TenantId, waiter: WaiterId) -> StoreResult<WaitState> {
        let mut st = self.state();
        let now_us = st.now_us();
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(tenant) else {
            return Ok(WaitState::Gone);
        };
        let state = ts.poll(waiter, now_us, retain);
        self.publish(tenant, ts);
        Ok(state)
    }

    async fn wait_leave(
        &self,
        tenant: &TenantId,
        waiter: WaiterId,
        went_away: bool,
    ) -> StoreResult<LeaveOutcome> {
        let mut st = self.state();
        let now_us = st.now_us();
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(tenant) else {
            return Ok(LeaveOutcome::Gone);
        };
        let outcome = ts.leave(waiter, went_away, now_us, retain);
        self.publish(tenant, ts);
        Ok(outcome)
    }

    async fn release_by_name(
        &self,
        caller: &Caller,
        resource: &Resource,
        by: &Releaser,
    ) -> StoreResult<Metered<ReleaseByName>> {
        self.idempotent(
            caller,
            || {
                let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
                Ok(Metered::new(
                    self.release_by_name_now(&caller.tenant, resource, by)?,
                    rate,
                ))
            },
            // A refusal (403) is not recorded.
            |v| match v {
                ReleaseByName::Released | ReleaseByName::NotHeld => Keep::Record,
                _ => Keep::Skip,
            },
        )
    }

    async fn lock(&self, caller: &Caller, req: &LockRequest) -> StoreResult<Metered<LockOutcome>> {
        self.idempotent(
            caller,
            || {
                let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
                Ok(Metered::new(self.lock_now(caller, req)?, rate))
            },
            // A full pool or address (429) is not recorded; a wait's record
            // waits for the grant.
            |v| match (v, req.wait) {
                (LockOutcome::Acquired { .. } | LockOutcome::Locked, _) => Keep::Record,
                (LockOutcome::Queued, Some(w)) => Keep::Pending(now_ms() + w.ms),
                _ => Keep::Skip,
            },
        )
    }
}
