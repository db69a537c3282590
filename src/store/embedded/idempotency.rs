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
    answer: Arc<dyn Any + Send + Sync>,
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

fn now_ms() -> Millis {
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
        keep: impl FnOnce(&T) -> bool,
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
            let value = rec.answer.downcast_ref::<T>().cloned().ok_or_else(|| {
                StoreError::Internal("an idempotency record of another operation".into())
            })?;
            return Ok(Metered {
                value,
                rate,
                replayed: true,
            });
        }
        let out = run()?;
        if keep(&out.value) {
            let seq = mine.next;
            mine.next += 1;
            mine.records.insert(
                idem.record.clone(),
                Record {
                    fingerprint: idem.fingerprint.clone(),
                    seq,
                    expires_ms: now + idem.retain_ms,
                    answer: Arc::new(out.value.clone()),
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
}
