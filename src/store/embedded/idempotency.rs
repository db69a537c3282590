//! Idempotency-Key records (contract section 14), as the Redis store keeps
//! them in `lua/idem.lua`: per tenant, the answer of a request's first
//! execution under its key, for `retain_ms`, at most `max_records` of them
//! (the oldest go first). The look-up, the operation and the record happen
//! under one lock, so two concurrent repeats cannot both execute.

use super::*;
use std::any::Any;

/// One recorded answer.
struct Record {
    fingerprint: String,
    /// Its place in the order of recording.
    seq: u64,
    expires_ms: Millis,
    /// `None` while the request under the key still waits (contract section
    /// 12): a repeat then is `IdempotencyKeyInUse`.
    answer: Option<Arc<dyn Any + Send + Sync>>,
}

/// What becomes of an answer under an Idempotency-Key.
pub(super) enum Keep {
    /// Recorded: a repeat gets it.
    Record,
    /// The request waits until (ms): a repeat meanwhile is in use; the wait's
    /// end settles it (`EmbeddedStore::settle`).
    Pending(Millis),
    /// Not recorded (a refusal).
    Skip,
}

/// Every tenant's records.
#[derive(Default)]
pub(super) struct Records {
    by_tenant: HashMap<TenantId, TenantRecords>,
}

#[derive(Default)]
struct TenantRecords {
    records: HashMap<String, Record>,
    /// (place in the order of recording, id), oldest first.
    order: BTreeSet<(u64, String)>,
    next: u64,
}

impl TenantRecords {
    fn forget_expired(&mut self, now_ms: Millis) {
        // Records expire in the order they were made (one retention for all).
        let expired: Vec<(u64, String)> = self
            .order
            .iter()
            .take_while(|(seq, id)| {
                self.records
                    .get(id)
                    .is_none_or(|r| r.expires_ms <= now_ms || r.seq != *seq)
            })
            .cloned()
            .collect();
        for (seq, id) in expired {
            self.order.remove(&(seq, id.clone()));
            if self.records.get(&id).is_some_and(|r| r.seq == seq) {
                self.records.remove(&id);
            }
        }
    }
}

impl Records {
    /// Forgets a deleted tenant's records.
    pub(super) fn forget_tenant(&mut self, tenant: &TenantId) {
        self.by_tenant.remove(tenant);
    }
}

pub(super) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl EmbeddedStore {
    /// Runs `run` once per Idempotency-Key of `caller`: a repeat with the same
    /// fingerprint gets the recorded answer (counted against the replay
    /// quota, nothing run), one with another fingerprint
    /// `IdempotencyKeyReused`. What `run` answers is recorded when `keep`
    /// says so (a refusal is not).
    pub(super) fn idempotent<T: Clone + Send + Sync + 'static>(
        &self,
        caller: &Caller,
        run: impl FnOnce() -> StoreResult<Metered<T>>,
        keep: impl FnOnce(&T) -> Keep,
    ) -> StoreResult<Metered<T>> {
        let Some(idem) = &caller.idempotency else {
            return run();
        };
        let mut all = self
            .inner
            .idempotency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let mine = all.by_tenant.entry(caller.tenant.clone()).or_default();
        mine.forget_expired(now);
        if let Some(rec) = mine.records.get(&idem.record) {
            let rate = self.meter(&caller.tenant, idem.replay_quota.as_ref())?;
            if rec.fingerprint != idem.fingerprint {
                return Err(StoreError::IdempotencyKeyReused);
            }
            let Some(answer) = &rec.answer else {
                return Err(StoreError::IdempotencyKeyInUse);
            };
            let value = answer.downcast_ref::<T>().cloned().ok_or_else(|| {
                StoreError::Internal("an idempotency record of another operation".into())
            })?;
            return Ok(Metered {
                value,
                rate,
                replayed: true,
            });
        }
        let out = run()?;
        let (answer, expires_ms): (Option<Arc<dyn Any + Send + Sync>>, Millis) =
            match keep(&out.value) {
                Keep::Skip => return Ok(out),
                Keep::Record => (Some(Arc::new(out.value.clone())), now + idem.retain_ms),
                Keep::Pending(until) => (None, until + 60_000),
            };
        {
            let seq = mine.next;
            mine.next += 1;
            mine.records.insert(
                idem.record.clone(),
                Record {
                    fingerprint: idem.fingerprint.clone(),
                    seq,
                    expires_ms,
                    answer,
                },
            );
            mine.order.insert((seq, idem.record.clone()));
            while mine.records.len() > idem.max_records {
                let Some((seq, id)) = mine.order.pop_first() else {
                    break;
                };
                if mine.records.get(&id).is_some_and(|r| r.seq == seq) {
                    mine.records.remove(&id);
                }
            }
        }
        Ok(out)
    }

    /// The end of a wait under an Idempotency-Key: its pending record gets
    /// the grant (a repeat answers with it) or, when nothing was granted,
    /// goes (a retry executes again).
    pub(super) fn settle_record(
        &self,
        caller: &Caller,
        answer: Option<Arc<dyn Any + Send + Sync>>,
    ) {
        let Some(idem) = &caller.idempotency else {
            return;
        };
        let mut all = self
            .inner
            .idempotency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(mine) = all.by_tenant.get_mut(&caller.tenant) else {
            return;
        };
        let pending = mine
            .records
            .get(&idem.record)
            .is_some_and(|r| r.answer.is_none() && r.fingerprint == idem.fingerprint);
        if !pending {
            return;
        }
        match answer {
            Some(a) => {
                if let Some(r) = mine.records.get_mut(&idem.record) {
                    r.answer = Some(a);
                    r.expires_ms = now_ms() + idem.retain_ms;
                }
            }
            None => {
                mine.records.remove(&idem.record);
            }
        }
    }
}
