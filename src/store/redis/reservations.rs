//! The reservation operations: each is one metered script call (`lua/`), whose
//! reply is read back into domain outcomes here.

use super::replies::{self, as_i64, as_opt_millis, as_string, as_u64, bad_reply, items};
use super::{keys, scripts, RedisStore};
use crate::domain::{Kind, ReleaseToken, Resource, TenantId};
use crate::store::{
    BatchMode, Caller, CheckOutcome, Contended, ExtendItem, ExtendOutcome, FenceItem, FenceOutcome,
    LeaveOutcome, ListPage, ListQuery, LockOutcome, LockRequest, Metered, Quota, ReleaseByName,
    ReleaseItem, ReleaseOutcome, Releaser, Reservations, ReserveItem, ReserveOutcome, Settled,
    StoreError, StoreResult, WaitState, WaiterId,
};
use async_trait::async_trait;
use redis::Value;

/// One item of reserve.lua.
struct ReserveArgs<'a> {
    resource: &'a str,
    requester: &'a str,
    /// In ms, 0 for none; negative: locklock's default (reserve.lua).
    ttl_ms: i64,
    token: ReleaseToken,
    kind: Kind,
    /// warnBeforeSeconds (0: no expiry warning).
    warn_s: u64,
}

/// A release token as the hold records it: its 16 bytes. A token that is not
/// a UUID in the canonical form we hand out can match no hold, so it becomes
/// a value no hold has.
fn token_bytes(token: &ReleaseToken) -> Vec<u8> {
    match uuid::Uuid::parse_str(token.as_str()) {
        Ok(u) if u.hyphenated().to_string() == token.as_str() => u.as_bytes().to_vec(),
        _ => b"-".to_vec(),
    }
}

/// One row of reserve.lua's answer (also a waiter's grant rows).
pub(super) fn reserve_row(row: Value) -> StoreResult<ReserveOutcome> {
    let row = items(row)?;
    let held_by = |by: &Value| as_string(by).unwrap_or_default();
    match row.as_slice() {
        [Value::Int(1), at, ea, ft, tok, rest @ ..] => Ok(ReserveOutcome::Reserved {
            release_token: token_of(tok)?,
            reserved_at: as_u64(at).ok_or_else(|| bad_reply("reserve"))?,
            expires_at: as_opt_millis(ea),
            fencing_token: as_u64(ft).ok_or_else(|| bad_reply("reserve"))?,
            waited_ms: rest.first().and_then(as_u64),
            hold_deadline: rest.get(1).and_then(as_opt_millis),
            capped: rest.get(2) == Some(&Value::Int(1)),
        }),
        [Value::Int(6), at] => Ok(ReserveOutcome::LockDelay {
            available_at: as_u64(at).ok_or_else(|| bad_reply("reserve"))?,
        }),
        [Value::Int(0), by, ea, rest @ ..] => Ok(ReserveOutcome::AlreadyHeld {
            held_by: held_by(by),
            expires_at: as_opt_millis(ea),
            queue_length: rest.first().and_then(as_u64).unwrap_or(0),
            holders: rest.get(1).and_then(as_u64).unwrap_or(0),
            // -1: the holders are no semaphore.
            available: rest.get(2).and_then(as_u64),
        }),
        [Value::Int(5), kc] => Ok(ReserveOutcome::LimitMismatch {
            kind: as_string(kc)
                .and_then(|c| Kind::from_code(&c))
                .ok_or_else(|| bad_reply("reserve"))?,
        }),
        [Value::Int(3)] => Ok(ReserveOutcome::Aborted),
        [Value::Int(4), place, by, ea] => Ok(ReserveOutcome::Queued {
            place: as_u64(place).ok_or_else(|| bad_reply("reserve"))?,
            held_by: held_by(by),
            expires_at: as_opt_millis(ea),
        }),
        _ => Err(bad_reply("reserve")),
    }
}

/// The release token a script answers (its 16 bytes).
fn token_of(v: &Value) -> StoreResult<ReleaseToken> {
    match v {
        Value::BulkString(b) => ReleaseToken::from_bytes(b),
        _ => None,
    }
    .ok_or_else(|| bad_reply("reserve: release token"))
}

/// A script's yes/no argument.
pub(super) fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// Appends a limit to a metered script call: its key, interval and burst
/// (unlimited: any key of the tenant, interval 0).
fn limit(inv: &mut redis::ScriptInvocation<'_>, p: &str, quota: Option<&Quota>) {
    match quota {
        Some(q) => inv
            .key(keys::quota(p, q))
            .arg(q.interval_us())
            .arg(q.burst.max(1)),
        None => inv.key(keys::tenant(p)).arg(0).arg(1),
    };
}

/// Appends a request's rate limit and Idempotency-Key to a metered script
/// call (see meter.lua and idem.lua): after every key and argument of the
/// script's own.
fn meter(inv: &mut redis::ScriptInvocation<'_>, p: &str, caller: &Caller) {
    limit(inv, p, caller.quota.as_ref());
    match &caller.idempotency {
        Some(idem) => {
            inv.key(keys::idempotency_record(p, &idem.record))
                .key(keys::idempotency_index(p));
            inv.arg(idem.fingerprint.as_str())
                .arg(idem.retain_ms)
                .arg(idem.max_records);
            limit(inv, p, idem.replay_quota.as_ref());
            inv.arg("1");
        }
        None => {
            inv.arg("0");
        }
    }
}

impl RedisStore {
    /// An empty batch: counted against the caller's rate limit, nothing else.
    async fn empty_batch<T>(&self, caller: &Caller) -> StoreResult<Metered<Vec<T>>> {
        let rate = match &caller.quota {
            Some(q) => Some(crate::store::Upkeep::charge(self, &caller.tenant, q).await?),
            None => None,
        };
        Ok(Metered::new(Vec::new(), rate))
    }

    /// Runs a read script over the hold of each item (`KEYS[i]`, with its
    /// `ARGV[i]` when given), metered; `read` makes each reply row, one per
    /// item, into an outcome (`None`: not a row of this script).
    async fn read_holds<'a, T>(
        &self,
        script: &redis::Script,
        what: &'static str,
        caller: &Caller,
        holds: impl ExactSizeIterator<Item = (&'a Resource, Option<String>)>,
        read: impl Fn(&Resource, &[Value]) -> Option<T>,
    ) -> StoreResult<Metered<Vec<T>>> {
        if holds.len() == 0 {
            return self.empty_batch(caller).await;
        }
        let p = keys::prefix(&caller.tenant);
        let mut inv = script.prepare_invoke();
        let mut resources = Vec::with_capacity(holds.len());
        for (r, arg) in holds {
            inv.key(keys::hold(&p, r.as_str()));
            if let Some(a) = arg {
                inv.arg(a);
            }
            resources.push(r);
        }
        meter(&mut inv, &p, caller);
        let mut c = self.conn();
        let reply: Value = self
            .run(what, async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered {
            value,
            rate,
            replayed,
        } = replies::metered(reply, caller)?;
        let rows = items(value)?;
        if rows.len() != resources.len() {
            return Err(bad_reply(what));
        }
        let value = rows
            .into_iter()
            .zip(resources)
            .map(|(row, r)| read(r, &items(row)?).ok_or_else(|| bad_reply(what)))
            .collect::<StoreResult<_>>()?;
        Ok(Metered {
            value,
            rate,
            replayed,
        })
    }

    /// Runs reserve.lua: -1 (tenant gone), -2 (cap reached) or one row per item.
    async fn run_reserve(
        &self,
        caller: &Caller,
        items_in: &[ReserveArgs<'_>],
        cap: usize,
        per_requester: usize,
        locklock: &str,
        mode: BatchMode,
    ) -> StoreResult<Metered<Value>> {
        let p = keys::prefix(&caller.tenant);
        let mut inv = scripts::RESERVE.prepare_invoke();
        inv.key(keys::tenant(&p)).key(keys::events(&p));
        inv.arg(caller.label.as_str())
            .arg(items_in.len())
            .arg(self.inner.retain)
            .arg(cap)
            .arg(per_requester)
            .arg(locklock)
            .arg(flag(mode.atomic));
        match mode.wait {
            Some(w) => inv.arg(w.ms).arg(w.waiter.to_string()).arg(w.max_waiters),
            None => inv.arg(0).arg("").arg(0),
        };
        for it in items_in {
            inv.key(keys::hold(&p, it.resource));
            inv.arg(it.resource)
                .arg(it.requester)
                .arg(it.ttl_ms)
                .arg(token_bytes(&it.token))
                .arg(it.kind.code());
        }
        // The expiry warnings, one per item, after the items (reserve.lua).
        for it in items_in {
            inv.arg(it.warn_s);
        }
        meter(&mut inv, &p, caller);
        let mut c = self.conn();
        let reply = self
            .run("reserve", async { inv.invoke_async(&mut c).await })
            .await?;
        let metered = replies::metered(reply, caller)?;
        if let Some(why) = replies::refusal(&metered.value) {
            return Err(StoreError::Policy(why));
        }
        Ok(Metered {
            value: self.with_due(&caller.tenant, metered.value).await?,
            ..metered
        })
    }

    /// Runs unreserve.lua or extend.lua: both take the tenant, its event
    /// stream and one hold key per item, then `n`, the label, the retention
    /// and the all-or-nothing flag, then per item resource, requester, token (and what `extra`
    /// adds), then `after` (extend.lua's warnings). The body's reply, or `TenantGone`.
    async fn run_token_batch<I>(
        &self,
        what: &'static str,
        script: &redis::Script,
        caller: &Caller,
        (items_in, mode): (&[I], BatchMode),
        after: &[u64],
        item: impl Fn(
            &I,
        ) -> (
            &Resource,
            &crate::domain::Requester,
            &ReleaseToken,
            Option<u64>,
        ),
    ) -> StoreResult<Metered<Value>> {
        let p = keys::prefix(&caller.tenant);
        let mut inv = script.prepare_invoke();
        inv.key(keys::tenant(&p)).key(keys::events(&p));
        inv.arg(items_in.len())
            .arg(caller.label.as_str())
            .arg(self.inner.retain)
            .arg(flag(mode.atomic));
        for it in items_in {
            let (resource, requester, token, extra) = item(it);
            inv.key(keys::hold(&p, resource.as_str()));
            inv.arg(resource.as_str())
                .arg(requester.as_str())
                .arg(token_bytes(token));
            if let Some(x) = extra {
                inv.arg(x);
            }
        }
        for x in after {
            inv.arg(*x);
        }
        meter(&mut inv, &p, caller);
        let mut c = self.conn();
        let reply: Value = self
            .run(what, async { inv.invoke_async(&mut c).await })
            .await?;
        let metered = replies::metered(reply, caller)?;
        if metered.value == Value::Int(-1) {
            return Err(StoreError::TenantGone);
        }
        if let Some(why) = replies::refusal(&metered.value) {
            return Err(StoreError::Policy(why));
        }
        Ok(metered)
    }

    /// Takes the "earliest new second" off a `{rows, earliest}` reply and moves
    /// the tenant up in the fleet's due index when there is one; other replies
    /// (-1, -2) pass through.
    async fn with_due(&self, tenant: &TenantId, reply: Value) -> StoreResult<Value> {
        let Value::Array(mut parts) = reply else {
            return Ok(reply);
        };
        let (Some(earliest), Some(rows)) = (parts.pop(), parts.pop()) else {
            return Err(bad_reply("reservation script"));
        };
        if let Some(second) = as_i64(&earliest).filter(|s| *s > 0) {
            self.mark_due(tenant, second).await;
        }
        Ok(rows)
    }
}

#[async_trait]
impl Reservations for RedisStore {
    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn reserve(
        &self,
        caller: &Caller,
        items_in: &[ReserveItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReserveOutcome>>> {
        if items_in.is_empty() {
            return self.empty_batch(caller).await;
        }
        let args: Vec<ReserveArgs> = items_in
            .iter()
            .map(|it| ReserveArgs {
                resource: it.resource.as_str(),
                requester: it.requester.as_str(),
                ttl_ms: it.ttl.map_or(0, |d| d.millis() as i64),
                token: ReleaseToken::generate(),
                kind: it.kind,
                warn_s: it.warn.map_or(0, |w| w.seconds()),
            })
            .collect();
        let Metered {
            value: reply,
            rate,
            replayed,
        } = self.run_reserve(caller, &args, 0, 0, "", mode).await?;
        let rows = match reply {
            Value::Int(-1) => return Err(StoreError::TenantGone),
            Value::Int(-2) | Value::Int(-3) => return Err(bad_reply("reserve (no cap was set)")),
            Value::Int(-4) => return Err(StoreError::TooManyWaiters),
            reply => items(reply)?,
        };
        if rows.len() != items_in.len() {
            return Err(bad_reply("reserve"));
        }
        let value = rows
            .into_iter()
            .map(reserve_row)
            .collect::<StoreResult<_>>()?;
        Ok(Metered {
            value,
            rate,
            replayed,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn unreserve(
        &self,
        caller: &Caller,
        items_in: &[ReleaseItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReleaseOutcome>>> {
        if items_in.is_empty() {
            return self.empty_batch(caller).await;
        }
        let Metered {
            value,
            rate,
            replayed,
        } = self
            .run_token_batch(
                "unreserve",
                &scripts::UNRESERVE,
                caller,
                (items_in, mode),
                &[],
                |it| (&it.resource, &it.requester, &it.release_token, None),
            )
            .await?;
        let codes = items(self.with_due(&caller.tenant, value).await?)?;
        if codes.len() != items_in.len() {
            return Err(bad_reply("unreserve"));
        }
        let value = codes
            .into_iter()
            .map(|code| match code {
                Value::Int(1) => Ok(ReleaseOutcome::Unreserved),
                Value::Int(0) => Ok(ReleaseOutcome::NotHeld),
                Value::Int(2) => Ok(ReleaseOutcome::InvalidToken),
                Value::Int(3) => Ok(ReleaseOutcome::Aborted),
                _ => Err(bad_reply("unreserve")),
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered {
            value,
            rate,
            replayed,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn extend(
        &self,
        caller: &Caller,
        items_in: &[ExtendItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ExtendOutcome>>> {
        if items_in.is_empty() {
            return self.empty_batch(caller).await;
        }
        // Each item's new expiry warning (0: keep the hold's), after the items.
        let warnings: Vec<u64> = items_in
            .iter()
            .map(|it| it.warn.map_or(0, |w| w.seconds()))
            .collect();
        let Metered {
            value,
            rate,
            replayed,
        } = self
            .run_token_batch(
                "extend",
                &scripts::EXTEND,
                caller,
                (items_in, mode),
                &warnings,
                |it| {
                    (
                        &it.resource,
                        &it.requester,
                        &it.release_token,
                        Some(it.ttl.millis()),
                    )
                },
            )
            .await?;
        let rows = items(self.with_due(&caller.tenant, value).await?)?;
        if rows.len() != items_in.len() {
            return Err(bad_reply("extend"));
        }
        let value = rows
            .into_iter()
            .map(|row| {
                let row = items(row)?;
                match row.as_slice() {
                    [Value::Int(1), ea, rest @ ..] => Ok(ExtendOutcome::Extended {
                        expires_at: as_u64(ea).ok_or_else(|| bad_reply("extend"))?,
                        hold_deadline: rest.first().and_then(as_opt_millis),
                        capped: rest.get(1) == Some(&Value::Int(1)),
                    }),
                    [Value::Int(0)] => Ok(ExtendOutcome::NotHeld),
                    [Value::Int(2)] => Ok(ExtendOutcome::InvalidToken),
                    [Value::Int(3)] => Ok(ExtendOutcome::Aborted),
                    _ => Err(bad_reply("extend")),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered {
            value,
            rate,
            replayed,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = resources.len()))]
    async fn check(
        &self,
        caller: &Caller,
        resources: &[Resource],
    ) -> StoreResult<Metered<Vec<CheckOutcome>>> {
        let holds = resources.iter().map(|r| (r, None));
        self.read_holds(
            &scripts::CHECK,
            "check",
            caller,
            holds,
            |r, row| match row {
                [Value::Int(1), rest @ ..] => {
                    replies::holding(r.clone(), rest.get(..5)?).map(|mut h| {
                        h.hold_deadline = rest.get(6).and_then(as_opt_millis);
                        CheckOutcome::Held(h, rest.get(5).and_then(as_u64).unwrap_or(0))
                    })
                }
                [Value::Int(2), kc, qlen, rows, mh @ ..] => {
                    // maxHoldSeconds in ms (0: none).
                    let max_hold = mh.first().and_then(as_u64).filter(|m| *m > 0);
                    let kind = Kind::from_code(&as_string(kc)?)?;
                    let holders = items(rows.clone())
                        .ok()?
                        .into_iter()
                        .map(|row| {
                            let mut h = replies::holding(r.clone(), &items(row).ok()?)?;
                            h.kind = kind;
                            h.hold_deadline = max_hold.map(|m| h.reserved_at + m);
                            Some(h)
                        })
                        .collect::<Option<Vec<_>>>()?;
                    Some(CheckOutcome::Holders {
                        kind,
                        holders,
                        queue_length: as_u64(qlen).unwrap_or(0),
                    })
                }
                [Value::Int(0), rest @ ..] => {
                    let queue_length = rest.first().and_then(as_u64).unwrap_or(0);
                    Some(match rest.get(1).and_then(as_opt_millis) {
                        Some(available_at) => CheckOutcome::LockDelay {
                            queue_length,
                            available_at,
                        },
                        None => CheckOutcome::Free(queue_length),
                    })
                }
                _ => None,
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn validate(
        &self,
        caller: &Caller,
        items_in: &[FenceItem],
    ) -> StoreResult<Metered<Vec<FenceOutcome>>> {
        let holds = items_in
            .iter()
            .map(|it| (&it.resource, Some(it.fencing_token.to_string())));
        self.read_holds(
            &scripts::VALIDATE,
            "validate",
            caller,
            holds,
            |_, row| match row {
                [Value::Int(1), rq, ea] => Some(FenceOutcome::Current {
                    requester: as_string(rq)?,
                    expires_at: as_opt_millis(ea),
                }),
                [Value::Int(0), Value::Int(-1)] => Some(FenceOutcome::Stale { holder: None }),
                [Value::Int(0), ft] => Some(FenceOutcome::Stale {
                    holder: Some(as_u64(ft)?),
                }),
                _ => None,
            },
        )
        .await
    }

    async fn contention(&self, tenant: &TenantId, limit: usize) -> StoreResult<Vec<Contended>> {
        let (waits, timed_out) = keys::contention(&keys::prefix(tenant));
        let mut inv = scripts::CONTENTION.prepare_invoke();
        inv.key(waits).key(timed_out).arg(limit.max(1));
        let mut c = self.conn();
        let reply: Value = self
            .run("contention", async { inv.invoke_async(&mut c).await })
            .await?;
        items(reply)?
            .chunks_exact(3)
            .map(|row| {
                Ok(Contended {
                    resource: as_string(&row[0]).ok_or_else(|| bad_reply("contention"))?,
                    waits: as_u64(&row[1]).unwrap_or(0),
                    timed_out: as_u64(&row[2]).unwrap_or(0),
                })
            })
            .collect()
    }

    fn grants(&self) -> tokio::sync::broadcast::Receiver<(TenantId, WaiterId)> {
        self.inner.grants.subscribe()
    }

    async fn settle(&self, _caller: &Caller, _how: Settled) -> StoreResult<()> {
        // The grant's script (lua/waits.lua) wrote the record, and a wait that
        // ended without one removed it (wait_leave.lua).
        Ok(())
    }

    async fn wait_poll(&self, tenant: &TenantId, waiter: WaiterId) -> StoreResult<WaitState> {
        self.poll_waiter(tenant, waiter).await
    }

    async fn wait_leave(
        &self,
        tenant: &TenantId,
        waiter: WaiterId,
        went_away: bool,
    ) -> StoreResult<LeaveOutcome> {
        self.leave_waiter(tenant, waiter, went_away).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
    async fn list(&self, caller: &Caller, query: &ListQuery) -> StoreResult<Metered<ListPage>> {
        let p = keys::prefix(&caller.tenant);
        // Members of the requester index are `<requester>\0<resource>`; both
        // indexes are walked in byte order between lexicographic bounds: from
        // after the cursor (or the prefix) to the end of the prefix range.
        // 0xFF never occurs in UTF-8, so prefix+0xFF is above every name that
        // starts with the prefix, and `<requester>\x01` above all of its members.
        let (which, base, want_rq): (&str, Vec<u8>, &str) = match &query.requester {
            Some(rq) => ("q", [rq.as_str().as_bytes(), b"\0"].concat(), rq.as_str()),
            None => ("i", Vec::new(), ""),
        };
        let prefix = query.prefix.as_ref().map_or("", |p| p.as_str()).as_bytes();
        let from = [&base[..], prefix].concat();
        let min: Vec<u8> = match &query.after {
            Some(after) if after.as_bytes() >= prefix => {
                [b"(", &base[..], after.as_bytes()].concat()
            }
            _ if from.is_empty() => b"-".to_vec(),
            _ => [b"[", &from[..]].concat(),
        };
        let max: Vec<u8> = match (prefix.is_empty(), query.requester.is_some()) {
            (false, _) => [b"(", &from[..], &[0xFF]].concat(),
            (true, true) => [b"(", want_rq.as_bytes(), b"\x01"].concat(),
            (true, false) => b"+".to_vec(),
        };
        let mut inv = scripts::LIST.prepare_invoke();
        inv.key(keys::tenant(&p))
            .arg(which)
            .arg(min)
            .arg(max)
            .arg(query.limit)
            .arg(want_rq);
        meter(&mut inv, &p, caller);
        let mut c = self.conn();
        let reply: Value = self
            .run("list", async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered {
            value,
            rate,
            replayed,
        } = replies::metered(reply, caller)?;
        let mut parts = items(value)?.into_iter();
        let (Some(rows), Some(last), Some(more)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad_reply("list"));
        };
        let mut out = Vec::new();
        for row in items(rows)? {
            let row = items(row)?;
            let (first, rest) = row.split_first().ok_or_else(|| bad_reply("list"))?;
            let name = as_string(first).ok_or_else(|| bad_reply("list"))?;
            let resource = Resource::parse(name).map_err(|_| bad_reply("list"))?;
            out.push(replies::holding(resource, rest).ok_or_else(|| bad_reply("list"))?);
        }
        let next_after = match more {
            Value::Int(1) => as_string(&last).filter(|l| !l.is_empty()),
            _ => None,
        };
        Ok(Metered {
            value: ListPage {
                items: out,
                next_after,
            },
            rate,
            replayed,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
    async fn release_by_name(
        &self,
        caller: &Caller,
        resource: &Resource,
        by: &Releaser,
    ) -> StoreResult<Metered<ReleaseByName>> {
        let (kind, label, locklock, presented) = match by {
            Releaser::Admin => ("FORCE_RELEASED", "admin", "0", ""),
            Releaser::Locklock { label, secret_hash } => (
                "UNRESERVED",
                label.as_str(),
                "1",
                secret_hash.as_deref().unwrap_or(""),
            ),
        };
        let p = keys::prefix(&caller.tenant);
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(keys::tenant(&p))
            .key(keys::events(&p))
            .key(keys::hold(&p, resource.as_str()))
            .arg(resource.as_str())
            .arg(self.inner.retain)
            .arg(kind)
            .arg(label)
            .arg(locklock)
            .arg(presented);
        meter(&mut inv, &p, caller);
        let mut c = self.conn();
        let reply: Value = self
            .run("release", async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered {
            value,
            rate,
            replayed,
        } = replies::metered(reply, caller)?;
        let value = match items(value)?.as_slice() {
            [Value::Int(1), _, earliest] => {
                if let Some(second) = as_i64(earliest).filter(|s| *s > 0) {
                    self.mark_due(&caller.tenant, second).await;
                }
                ReleaseByName::Released
            }
            [Value::Int(0)] => ReleaseByName::NotHeld,
            [Value::Int(3)] => ReleaseByName::WrongSecret,
            [Value::Int(4)] => ReleaseByName::NotALock,
            _ => return Err(bad_reply("release")),
        };
        Ok(Metered {
            value,
            rate,
            replayed,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
    async fn lock(&self, caller: &Caller, req: &LockRequest) -> StoreResult<Metered<LockOutcome>> {
        let args = [ReserveArgs {
            resource: req.resource.as_str(),
            requester: req.requester.as_str(),
            // locklock's default is lowered to the tenant's maxTtlSeconds
            // rather than refused (reserve.lua).
            ttl_ms: if req.ttl_defaulted {
                -(req.ttl.millis() as i64)
            } else {
                req.ttl.millis() as i64
            },
            token: ReleaseToken::generate(),
            kind: Kind::Exclusive,
            warn_s: 0,
        }];
        let locklock = format!("L{}", req.secret_hash.as_deref().unwrap_or(""));
        let Metered {
            value: reply,
            rate,
            replayed,
        } = self
            .run_reserve(
                caller,
                &args,
                req.max_held.unwrap_or(0),
                req.max_per_requester.unwrap_or(0),
                &locklock,
                BatchMode {
                    atomic: false,
                    wait: req.wait,
                },
            )
            .await?;
        let done = |value| {
            Ok(Metered {
                value,
                rate,
                replayed,
            })
        };
        let row = match reply {
            Value::Int(-1) => return Err(StoreError::TenantGone),
            Value::Int(-2) => return done(LockOutcome::Full),
            Value::Int(-3) => return done(LockOutcome::TooMany),
            Value::Int(-4) => return Err(StoreError::TooManyWaiters),
            reply => items(reply)?
                .into_iter()
                .next()
                .ok_or_else(|| bad_reply("lock"))?,
        };
        match items(row)?.as_slice() {
            [Value::Int(1), _at, ea, ft, _tok, ..] => done(LockOutcome::Acquired {
                expires_at: as_u64(ea).ok_or_else(|| bad_reply("lock"))?,
                fencing_token: as_u64(ft).ok_or_else(|| bad_reply("lock"))?,
            }),
            // Held, or held by shared or semaphore holders (a locklock lock
            // is exclusive and never waits behind those: contract section 15).
            [Value::Int(0), ..] | [Value::Int(5), ..] => done(LockOutcome::Locked),
            [Value::Int(6), at] => done(LockOutcome::Delayed {
                available_at: as_u64(at).ok_or_else(|| bad_reply("lock"))?,
            }),
            [Value::Int(4), ..] => done(LockOutcome::Queued),
            _ => Err(bad_reply("lock")),
        }
    }
}
