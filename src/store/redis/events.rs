//! The tenants' event history (a Redis Stream per tenant, written by the
//! scripts through `lua/events.lua`) and the hand-off to the subscriber for live
//! events.

use super::replies::{as_string, as_u64, bad_reply, items};
use super::{keys, scripts, subscriber, RedisStore};
use crate::domain::{Kind, TenantId};
use crate::events::{Event, EventId, EventKind, History, Live};
use crate::store::{EventLog, StoreError, StoreResult};
use async_trait::async_trait;
use redis::Value;
use tokio::sync::{broadcast, oneshot};

/// Decodes one stream entry (`XRANGE` reply row) written by events.lua.
fn stream_event(row: Value) -> Option<Event> {
    let mut parts = items(row).ok()?.into_iter();
    let id = EventId::parse(&as_string(&parts.next()?)?)?;
    let fields = items(parts.next()?).ok()?;
    let get = |name: &str| -> Option<String> {
        fields
            .chunks(2)
            .find(|kv| as_string(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(as_string))
    };
    Some(Event {
        id,
        kind: EventKind::parse(&get("t")?)?,
        resource: get("r")?,
        requester: get("q")?,
        label: get("l")?,
        at: get("a")?.parse().ok()?,
        expires_at: get("x")?.parse().ok(),
        fencing_token: get("f")?.parse().ok()?,
        hold: Kind::from_code(&get("m").unwrap_or_default())?,
    })
}

#[async_trait]
impl EventLog for RedisStore {
    async fn events_after(
        &self,
        tenant: &TenantId,
        after: EventId,
        limit: usize,
    ) -> StoreResult<History> {
        // Nothing can follow the largest id (and XRANGE refuses to start
        // after it): read no range, which makes it a gap below.
        let start = if after == EventId::MAX {
            String::new()
        } else {
            after.to_string()
        };
        let mut c = self.conn();
        let reply: Value = self
            .run("events read", async {
                scripts::EVENTS_READ
                    .key(keys::events(&keys::prefix(tenant)))
                    .arg(start)
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut parts = items(reply)?.into_iter();
        let (Some(last), Some(first), Some(trimmed), Some(rows)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad_reply("events read"));
        };
        let last = as_string(&last).and_then(|s| EventId::parse(&s));
        let first = as_string(&first).and_then(|s| EventId::parse(&s));
        let trimmed = as_u64(&trimmed).unwrap_or(0) > 0;
        // After a trim the id of the newest dropped event is unknown, so an id
        // below the first retained one is a gap (at worst one the client could
        // have done without: it re-lists).
        let gap = match last {
            None => after > EventId::ZERO,
            Some(last) => after > last || (trimmed && first.is_some_and(|f| f > after)),
        };
        if gap {
            return Ok(History::Gap { latest: last });
        }
        let events = items(rows)?
            .into_iter()
            .map(|row| stream_event(row).ok_or_else(|| bad_reply("events read")))
            .collect::<StoreResult<Vec<Event>>>()?;
        Ok(History::Events(events))
    }

    async fn latest_event(&self, tenant: &TenantId) -> StoreResult<Option<EventId>> {
        let mut c = self.conn();
        let rows: Value = self
            .run("latest event", async {
                redis::cmd("XREVRANGE")
                    .arg(keys::events(&keys::prefix(tenant)))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(items(rows)?
            .into_iter()
            .next()
            .and_then(|row| items(row).ok()?.first().and_then(as_string))
            .and_then(|id| EventId::parse(&id)))
    }

    async fn follow_events(&self, tenant: &TenantId) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .subscriber
            .send(subscriber::SubCmd::Follow(tenant.clone(), reply))
            .map_err(|_| StoreError::Internal("the subscriber task has stopped".into()))?;
        match tokio::time::timeout(self.inner.op_timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Internal(
                "the subscriber task has stopped".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(
                "event feed: subscribe timed out".into(),
            )),
        }
    }

    fn unfollow_events(&self, tenant: &TenantId) {
        let _ = self
            .inner
            .subscriber
            .send(subscriber::SubCmd::Unfollow(tenant.clone()));
    }

    fn live_events(&self) -> broadcast::Receiver<Live> {
        self.inner.live.subscribe()
    }
}
