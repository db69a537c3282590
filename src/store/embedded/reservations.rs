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

/// A release item's failure for the hold it finds (`None`: it succeeds).
fn release_failure(found: Found) -> Option<ReleaseOutcome> {
    match found {
        Found::NotHeld => Some(ReleaseOutcome::NotHeld),
        Found::InvalidToken => Some(ReleaseOutcome::InvalidToken),
        Found::Hold(_) => None,
    }
}

/// An extend item's failure for the hold it finds (`None`: it succeeds).
fn extend_failure(found: Found) -> Option<ExtendOutcome> {
    match found {
        Found::NotHeld => Some(ExtendOutcome::NotHeld),
        Found::InvalidToken => Some(ExtendOutcome::InvalidToken),
        Found::Hold(_) => None,
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
            // A hold released by an earlier item no longer counts.
            let mut gone = HashSet::new();
            let verdicts = items.iter().map(|it| {
                let who = (&it.requester, &it.release_token);
                let found = ts.find_hold(it.resource.as_str(), now_ms, who, &gone);
                if let Found::Hold(fencing) = found {
                    gone.insert(fencing);
                }
                release_failure(found)
            });
            if let Some(aborted) = all_or_nothing(verdicts, ReleaseOutcome::Aborted) {
                return Ok(aborted);
            }
        }
        let none = HashSet::new();
        let out = items
            .iter()
            .map(|it| {
                let res = it.resource.as_str();
                let who = (&it.requester, &it.release_token);
                match ts.find_hold(res, now_ms, who, &none) {
                    Found::Hold(fencing) => {
                        if let Some(old) = ts.remove_hold(res, fencing) {
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
                    found => release_failure(found).unwrap_or(ReleaseOutcome::NotHeld),
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
        // The lease policy refuses first (contract section 17; extend.lua).
        if let Some(max) = ts.tenant.policy.max_ttl_seconds {
            if let Some(index) = items.iter().position(|it| it.ttl.seconds() > max) {
                return Err(StoreError::Policy(PolicyRefusal::TtlAboveMax {
                    index,
                    max_seconds: max,
                }));
            }
        }
        let max_hold = ts.max_hold_ms();
        let none = HashSet::new();
        if mode.atomic {
            // Extending never changes another item's answer.
            let verdicts = items.iter().map(|it| {
                let who = (&it.requester, &it.release_token);
                extend_failure(ts.find_hold(it.resource.as_str(), now_ms, who, &none))
            });
            if let Some(aborted) = all_or_nothing(verdicts, ExtendOutcome::Aborted) {
                return Ok(aborted);
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let res = it.resource.as_str();
            let who = (&it.requester, &it.release_token);
            let fencing = match ts.find_hold(res, now_ms, who, &none) {
                Found::Hold(fencing) => fencing,
                found => {
                    out.push(extend_failure(found).unwrap_or(ExtendOutcome::NotHeld));
                    continue;
                }
            };
            let mut ea = now_ms + it.ttl.millis();
            let mut outcome = ExtendOutcome::Extended {
                expires_at: ea,
                hold_deadline: None,
                capped: false,
            };
            if let Some(lock) = ts.hold_mut(res, fencing) {
                // maxHoldSeconds: never past reservedAt + maxHoldSeconds (a
                // hold already past it, made before the policy, expires now).
                if let Some(mh) = max_hold {
                    let deadline = lock.reserved_at + mh;
                    let capped = ea > deadline;
                    if capped {
                        ea = deadline.max(now_ms);
                    }
                    outcome = ExtendOutcome::Extended {
                        expires_at: ea,
                        hold_deadline: Some(deadline),
                        capped,
                    };
                }
                let before = lock.clone();
                lock.expires_at = Some(ea);
                // A new warning replaces the hold's; either is re-armed for
                // the new expiry (contract section 18).
                if let Some(w) = it.warn {
                    lock.warn_s = Some(w.seconds());
                }
                let snapshot = lock.clone();
                if let Some(old) = before.expires_at {
                    ts.expiries.remove(&(old, res.to_string(), fencing));
                }
                ts.disarm_warning(res, &before);
                ts.expiries.insert((ea, res.to_string(), fencing));
                ts.arm_warning(res, &snapshot);
                ts.emit(
                    retain,
                    now_ms,
                    EventKind::Extended,
                    res,
                    &snapshot,
                    &caller.label,
                );
            }
            out.push(outcome);
        }
        self.publish(&caller.tenant, ts);
        Ok(out)
    }

    /// The live holds of each resource (fencing-token order), with how many
    /// wait in its line and when its lock delay ends, if it is in one.
    fn holdings_now<'a>(
        &self,
        tenant: &TenantId,
        resources: impl Iterator<Item = &'a Resource>,
    ) -> Vec<(Vec<Holding>, u64, Option<Millis>)> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let ts = st.tenants.get(tenant);
        resources
            .map(|r| match ts {
                Some(ts) => (
                    ts.live_holds(r.as_str(), now_ms)
                        .filter_map(|l| l.holding(r.as_str(), ts.max_hold_ms()))
                        .collect(),
                    ts.waits.len_of(r.as_str()),
                    ts.delay_until(r.as_str(), now_ms),
                ),
                None => (Vec::new(), 0, None),
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
            .map(
                |(mut holders, waiting, delay)| match holders.first().map(|h| h.kind) {
                    None => match delay {
                        Some(available_at) => CheckOutcome::LockDelay {
                            queue_length: waiting,
                            available_at,
                        },
                        None => CheckOutcome::Free(waiting),
                    },
                    Some(Kind::Exclusive) => {
                        let h = holders.swap_remove(0);
                        CheckOutcome::Held(h, waiting)
                    }
                    Some(kind) => CheckOutcome::Holders {
                        kind,
                        holders,
                        queue_length: waiting,
                    },
                },
            )
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
            .map(|(it, (holders, _, _))| {
                match holders.iter().find(|h| h.fencing_token == it.fencing_token) {
                    Some(h) => FenceOutcome::Current {
                        requester: h.requester.clone(),
                        expires_at: h.expires_at,
                    },
                    None => FenceOutcome::Stale {
                        holder: holders
                            .first()
                            .filter(|h| h.kind == Kind::Exclusive)
                            .map(|h| h.fencing_token),
                    },
                }
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
        // Resume strictly after the cursor's member (`<resource>`, or
        // `<resource>\0<fencing token>` within a group), bytewise: from its
        // resource on, skipping the members up to it.
        let after = query.after.as_deref().filter(|a| *a >= prefix);
        let start = after
            .and_then(|a| a.split('\0').next())
            .filter(|r| *r >= prefix)
            .unwrap_or(prefix)
            .to_string();
        let holds: Box<dyn Iterator<Item = (&String, &Lock)>> = match &query.requester {
            Some(rq) => {
                let rq = rq.as_str().to_string();
                let lo = (rq.clone(), start, 0);
                Box::new(
                    ts.by_requester
                        .range(lo..)
                        .take_while(move |(q, _, _)| *q == rq)
                        .filter_map(|(_, r, fencing)| {
                            let (name, holds) = ts.locks.get_key_value(r)?;
                            let at = holds.binary_search_by_key(fencing, |l| l.fencing).ok()?;
                            Some((name, holds.get(at)?))
                        }),
                )
            }
            None => Box::new(
                ts.locks
                    .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
                    .flat_map(|(name, holds)| holds.iter().map(move |l| (name, l))),
            ),
        };
        let mut items = Vec::new();
        let mut last = String::new();
        let mut next_after = None;
        for (name, l) in holds.take_while(|(n, _)| n.starts_with(prefix)) {
            if !l.live(now_ms) {
                continue;
            }
            let member = l.member(name);
            if after.is_some_and(|a| member.as_str() <= a) {
                continue;
            }
            let Some(h) = l.holding(name, ts.max_hold_ms()) else {
                continue;
            };
            if items.len() == query.limit {
                next_after = Some(last);
                break;
            }
            items.push(h);
            last = member;
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
        let Some(lock) = ts.live_holds(res, now_ms).next() else {
            return Ok(ReleaseByName::NotHeld);
        };
        let (kind, label) = match by {
            Releaser::Admin => (EventKind::ForceReleased, "admin".to_string()),
            Releaser::Locklock { label, secret_hash } => {
                // Shared and semaphore holds are Reservation API holds.
                if !lock.locklock || lock.kind.is_multi() {
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
        // Every live hold, one event each, in fencing-token order.
        let live: Vec<u64> = ts.live_holds(res, now_ms).map(|l| l.fencing).collect();
        for fencing in live {
            if let Some(old) = ts.remove_hold(res, fencing) {
                ts.emit(retain, now_ms, kind, res, &old, &label);
            }
        }
        // The head of the resource's line gets it, in this step.
        ts.handover(res, now_us, retain);
        self.publish(tenant, ts);
        Ok(ReleaseByName::Released)
    }

    fn lock_now(&self, caller: &Caller, req: &LockRequest) -> StoreResult<LockOutcome> {
        // locklock's default TTL is lowered to the tenant's maxTtlSeconds
        // rather than refused (contract section 17).
        let mut ttl = req.ttl;
        if req.ttl_defaulted {
            let max = self
                .state()
                .tenants
                .get(&caller.tenant)
                .and_then(|t| t.tenant.policy.max_ttl_seconds);
            if let Some(max) = max.filter(|m| *m < ttl.seconds()) {
                ttl = crate::domain::Ttl::from_seconds(max).unwrap_or(ttl);
            }
        }
        let item = ReserveItem {
            resource: req.resource.clone(),
            requester: req.requester.clone(),
            ttl: Some(ttl),
            kind: Kind::Exclusive,
            warn: None,
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
            ReserveOutcome::LockDelay { available_at } => LockOutcome::Delayed { available_at },
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

    async fn contention(&self, tenant: &TenantId, limit: usize) -> StoreResult<Vec<Contended>> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let Some(ts) = st.tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        let (waits, outs) = (
            ts.waits.waits_seen.live(now_ms),
            ts.waits.timed_out.live(now_ms),
        );
        // As contention.lua: most waits first (ties: the larger name first,
        // ZREVRANGE), then resources with only timed-out waits.
        let mut out: Vec<Contended> = waits
            .iter()
            .map(|(r, n)| Contended {
                resource: r.clone(),
                waits: *n,
                timed_out: outs.get(r).copied().unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| {
            b.waits
                .cmp(&a.waits)
                .then_with(|| b.resource.cmp(&a.resource))
        });
        out.truncate(limit.max(1));
        if out.len() < limit {
            let mut only: Vec<Contended> = outs
                .iter()
                .filter(|(r, _)| !waits.contains_key(*r))
                .map(|(r, n)| Contended {
                    resource: r.clone(),
                    waits: 0,
                    timed_out: *n,
                })
                .collect();
            only.sort_by(|a, b| {
                b.timed_out
                    .cmp(&a.timed_out)
                    .then_with(|| b.resource.cmp(&a.resource))
            });
            only.truncate(limit - out.len());
            out.extend(only);
        }
        Ok(out)
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
