//! The event history of each tenant and the live feed, in process.

use super::*;

#[async_trait]
impl EventLog for EmbeddedStore {
    async fn events_after(
        &self,
        tenant: &TenantId,
        after: EventId,
        limit: usize,
    ) -> StoreResult<History> {
        let st = self.state();
        Ok(match st.tenants.get(tenant) {
            Some(ts) => ts.history(after, limit),
            None => History::Gap { latest: None },
        })
    }

    async fn latest_event(&self, tenant: &TenantId) -> StoreResult<Option<EventId>> {
        Ok(self
            .state()
            .tenants
            .get(tenant)
            .and_then(|ts| ts.last_event))
    }

    async fn follow_events(&self, _tenant: &TenantId) -> StoreResult<()> {
        // Every event of this process reaches `live` already.
        Ok(())
    }

    fn unfollow_events(&self, _tenant: &TenantId) {}

    fn live_events(&self) -> broadcast::Receiver<Live> {
        self.inner.live.subscribe()
    }
}
