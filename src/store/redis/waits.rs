//! Waiting acquire on Redis (contract section 12): a waiter's poll and its
//! leaving, each one script (`lua/wait_poll.lua`, `lua/wait_leave.lua`) over
//! the lines of `lua/waits.lua`; the grants themselves are made by whatever
//! frees a resource, in its own script.

use super::replies::{self, as_i64, as_opt_millis, as_string, as_u64, bad_reply, items};
use super::reservations::{flag, reserve_row};
use super::{keys, scripts, RedisStore};
use crate::domain::TenantId;
use crate::store::{LeaveOutcome, ReserveOutcome, StoreResult, WaitState, WaiterId};
use redis::Value;

/// A waiter's grant: its RESERVED rows.
fn grant_rows(rows: &Value) -> StoreResult<Vec<ReserveOutcome>> {
    items(rows.clone())?.into_iter().map(reserve_row).collect()
}

impl RedisStore {
    /// Runs wait_poll.lua or wait_leave.lua for `waiter`.
    async fn run_wait(
        &self,
        script: &redis::Script,
        what: &'static str,
        tenant: &TenantId,
        waiter: WaiterId,
        went_away: Option<bool>,
    ) -> StoreResult<Value> {
        let p = keys::prefix(tenant);
        let mut inv = script.prepare_invoke();
        inv.key(keys::tenant(&p)).key(keys::events(&p));
        inv.arg(waiter.to_string()).arg(self.inner.retain);
        if let Some(gone) = went_away {
            inv.arg(flag(gone));
        }
        let mut c = self.conn();
        self.run(what, async { inv.invoke_async(&mut c).await })
            .await
    }

    /// Moves the tenant up in the fleet's due index when a script answered an
    /// earlier second than it had.
    async fn due(&self, tenant: &TenantId, earliest: &Value) {
        if let Some(second) = as_i64(earliest).filter(|s| *s > 0) {
            self.mark_due(tenant, second).await;
        }
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub(super) async fn poll_waiter(
        &self,
        tenant: &TenantId,
        waiter: WaiterId,
    ) -> StoreResult<WaitState> {
        let reply = self
            .run_wait(&scripts::WAIT_POLL, "wait poll", tenant, waiter, None)
            .await?;
        let parts = match reply {
            Value::Int(-1) => return Ok(WaitState::Gone),
            reply => items(reply)?,
        };
        match parts.as_slice() {
            [Value::Int(1), rows, earliest, ended] => {
                replies::holds_ended(ended);
                self.due(tenant, earliest).await;
                Ok(WaitState::Granted(grant_rows(rows)?))
            }
            [Value::Int(0), places, earliest, ended] => {
                replies::holds_ended(ended);
                self.due(tenant, earliest).await;
                Ok(WaitState::Waiting(
                    items(places.clone())?.iter().filter_map(as_u64).collect(),
                ))
            }
            _ => Err(bad_reply("wait poll")),
        }
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub(super) async fn leave_waiter(
        &self,
        tenant: &TenantId,
        waiter: WaiterId,
        went_away: bool,
    ) -> StoreResult<LeaveOutcome> {
        let reply = self
            .run_wait(
                &scripts::WAIT_LEAVE,
                "wait leave",
                tenant,
                waiter,
                Some(went_away),
            )
            .await?;
        let parts = match reply {
            Value::Int(-1) => return Ok(LeaveOutcome::Gone),
            reply => items(reply)?,
        };
        match parts.as_slice() {
            [Value::Int(1), rows, earliest, ended] => {
                replies::holds_ended(ended);
                self.due(tenant, earliest).await;
                Ok(LeaveOutcome::Granted(grant_rows(rows)?))
            }
            [Value::Int(2), earliest, ended] => {
                replies::holds_ended(ended);
                self.due(tenant, earliest).await;
                Ok(LeaveOutcome::Released)
            }
            [Value::Int(0), rows, earliest, ended] => {
                replies::holds_ended(ended);
                self.due(tenant, earliest).await;
                let left = items(rows.clone())?
                    .into_iter()
                    .map(|row| {
                        let row = items(row)?;
                        match row.as_slice() {
                            [place, by, ea] => Ok((
                                as_u64(place).unwrap_or(0),
                                as_string(by).unwrap_or_default(),
                                as_opt_millis(ea),
                            )),
                            _ => Err(bad_reply("wait leave")),
                        }
                    })
                    .collect::<StoreResult<_>>()?;
                Ok(LeaveOutcome::Left(left))
            }
            _ => Err(bad_reply("wait leave")),
        }
    }
}
