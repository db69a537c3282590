//! The per-instance fan-out: one [`Hub`] takes the store's live events and hands
//! each to this instance's SSE clients of that tenant whose filter matches, into a
//! bounded buffer per client. The hub follows (subscribes to) a tenant's events
//! only while a local client does, so an instance does no work for tenants none
//! of its clients follows.
//!
//! Nothing is lost silently: when the store says its live feed may have missed
//! messages (a reconnect) or the hub fell behind the store's feed, the hub reads
//! each followed tenant's history from its cursor (the newest id it has
//! dispatched) and dispatches what it missed; clients drop what they already have
//! by id. If that read fails, the tenant's clients are disconnected and resume
//! with `Last-Event-ID` themselves. A client whose buffer is full is cut off (its
//! socket shut down, so a client that stopped reading cannot pin memory).
//!
//! Streams end with their credential (contract section 22): a change to a
//! tenant's keys, tier or existence ends its streams here at once; when the
//! invalidation feed reconnects (it may have missed such changes) every
//! stream's credential is checked against the store again, and retried each
//! second while the store cannot answer.

use crate::domain::{TenantId, Tier};
use crate::events::{Delivery, Event, EventId, Filter, History, Live};
use crate::store::{Store, StoreError, StoreResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OnceCell};

/// Events read from the history per store call when catching up.
pub const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Most streams one tenant may hold on this instance.
    pub max_per_tenant: usize,
    /// Events buffered per client before it is cut off.
    pub buffer: usize,
}

/// How often a re-check of the streams' credentials that the store could not
/// answer is tried again.
const RECHECK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What opened a stream, so it can be checked again against the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An API key, by its hash: valid while the store knows it for the tenant.
    ApiKey(String),
    /// A token exchanged for a JWT: valid while the tenant exists, is not on
    /// the free tier and still has the JWT settings of this fingerprint.
    Token { fingerprint: String },
    /// A dashboard session: valid while the tenant exists.
    Session,
}

#[derive(Debug)]
pub enum JoinError {
    /// The tenant already holds `max_per_tenant` streams here.
    TooMany(usize),
    ShuttingDown,
    Store(StoreError),
}

pub struct Hub {
    store: Arc<dyn Store>,
    config: HubConfig,
    tenants: Mutex<HashMap<TenantId, TenantFeed>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    clients: AtomicU64,
}

struct TenantFeed {
    clients: HashMap<u64, Client>,
    /// Set once the store delivers this tenant's live events here.
    followed: Arc<OnceCell<()>>,
    /// The newest event id dispatched (or known when the follow began).
    cursor: Option<EventId>,
}

struct Client {
    tx: mpsc::Sender<Arc<Delivery>>,
    filter: Filter,
    credential: Credential,
    /// This client's connection, to shut down when it is cut off.
    socket: Option<std::net::TcpStream>,
    /// Dropped when the client is removed, which ends its stream at once.
    _alive: oneshot::Sender<()>,
}

/// One client's share of the hub. Dropping it leaves the hub.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<Delivery>>,
    /// Resolves (with an error) when the hub removes this client.
    pub removed: oneshot::Receiver<()>,
    /// Turns true when the instance shuts down.
    pub shutdown: watch::Receiver<bool>,
    _leave: Leave,
}

struct Leave {
    hub: Weak<Hub>,
    tenant: TenantId,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(&self.tenant, self.id, false);
        }
    }
}

impl Hub {
    /// Creates the hub and starts dispatching the store's live events.
    pub fn start(store: Arc<dyn Store>, config: HubConfig) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        let hub = Arc::new(Self {
            store: store.clone(),
            config,
            tenants: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown,
            clients: AtomicU64::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&hub), store.live_events()));
        tokio::spawn(close_on_credential_change(
            Arc::downgrade(&hub),
            store.invalidations(),
        ));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, TenantFeed>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams connected to this instance now.
    pub fn client_count(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Ends every stream (SIGTERM) and refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Registers a client. Once this returns, every event of the tenant committed
    /// from then on reaches the subscription (or cuts it off if it falls behind),
    /// so a history read made afterwards leaves no gap.
    pub async fn join(
        self: &Arc<Self>,
        tenant: &TenantId,
        filter: Filter,
        socket: Option<std::net::TcpStream>,
        credential: Credential,
    ) -> Result<Subscription, JoinError> {
        if *self.shutdown.borrow() {
            return Err(JoinError::ShuttingDown);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.config.buffer);
        let (alive, removed) = oneshot::channel();
        let followed = {
            let mut tenants = self.lock();
            let feed = tenants.entry(tenant.clone()).or_insert_with(|| TenantFeed {
                clients: HashMap::new(),
                followed: Arc::new(OnceCell::new()),
                cursor: None,
            });
            if feed.clients.len() >= self.config.max_per_tenant {
                return Err(JoinError::TooMany(self.config.max_per_tenant));
            }
            feed.clients.insert(
                id,
                Client {
                    tx,
                    filter,
                    credential,
                    socket,
                    _alive: alive,
                },
            );
            self.clients.fetch_add(1, Ordering::Relaxed);
            feed.followed.clone()
        };
        let sub = Subscription {
            rx,
            removed,
            shutdown: self.shutdown.subscribe(),
            _leave: Leave {
                hub: Arc::downgrade(self),
                tenant: tenant.clone(),
                id,
            },
        };
        followed
            .get_or_try_init(|| async {
                self.store.follow_events(tenant).await?;
                let latest = self.store.latest_event(tenant).await?;
                if let Some(feed) = self.lock().get_mut(tenant) {
                    feed.cursor = feed.cursor.max(latest);
                }
                Ok::<(), StoreError>(())
            })
            .await
            .map_err(JoinError::Store)?;
        Ok(sub)
    }

    /// Removes a client; `cut` also shuts its connection down (it fell behind).
    fn remove(&self, tenant: &TenantId, id: u64, cut: bool) {
        let client = {
            let mut tenants = self.lock();
            let Some(feed) = tenants.get_mut(tenant) else {
                return;
            };
            let client = feed.clients.remove(&id);
            if feed.clients.is_empty() {
                tenants.remove(tenant);
                self.store.unfollow_events(tenant);
            }
            client
        };
        if let Some(client) = client {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            if cut {
                if let Some(socket) = &client.socket {
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Hands a tenant's events to its matching clients; returns nothing because
    /// a client that cannot take an event is removed, never waited for.
    fn dispatch(&self, tenant: &TenantId, events: &[Event]) {
        let mut behind = Vec::new();
        {
            let mut tenants = self.lock();
            let Some(feed) = tenants.get_mut(tenant) else {
                return;
            };
            for event in events {
                if feed.cursor.is_none_or(|c| c < event.id) {
                    feed.cursor = Some(event.id);
                }
                let mut delivery: Option<Arc<Delivery>> = None;
                for (id, client) in &feed.clients {
                    if !client.filter.matches(event) || behind.contains(id) {
                        continue;
                    }
                    let d = delivery.get_or_insert_with(|| Delivery::new(event.clone()));
                    if client.tx.try_send(d.clone()).is_err() {
                        behind.push(*id);
                    }
                }
            }
        }
        for id in behind {
            tracing::info!(%tenant, client = id, "event stream client fell behind; disconnected");
            self.remove(tenant, id, true);
        }
    }

    /// Catches every followed tenant up from its history after the live feed may
    /// have missed messages.
    async fn resync(&self) {
        let cursors: Vec<(TenantId, Option<EventId>)> = self
            .lock()
            .iter()
            .map(|(t, f)| (t.clone(), f.cursor))
            .collect();
        for (tenant, cursor) in cursors {
            if !self.catch_up(&tenant, cursor).await {
                tracing::warn!(%tenant, "could not catch event streams up; disconnecting them to resume");
                self.drop_tenant(&tenant);
            }
        }
    }

    async fn catch_up(&self, tenant: &TenantId, cursor: Option<EventId>) -> bool {
        let Some(mut after) = cursor else {
            return false;
        };
        loop {
            match self.store.events_after(tenant, after, PAGE).await {
                Ok(History::Events(events)) => {
                    self.dispatch(tenant, &events);
                    match events.last() {
                        Some(last) if events.len() == PAGE => after = last.id,
                        _ => return true,
                    }
                }
                Ok(History::Gap { .. }) | Err(_) => return false,
            }
        }
    }

    /// Checks every stream's credential against the store again and ends the
    /// streams whose credential no longer holds. Returns false when the store
    /// could not answer for some (they are checked again later).
    async fn recheck(&self) -> bool {
        let clients: Vec<(TenantId, u64, Credential)> = self
            .lock()
            .iter()
            .flat_map(|(t, f)| {
                f.clients
                    .iter()
                    .map(move |(id, c)| (t.clone(), *id, c.credential.clone()))
            })
            .collect();
        let mut verdicts: HashMap<(TenantId, Credential), bool> = HashMap::new();
        let mut complete = true;
        let mut ended = 0usize;
        for (tenant, id, credential) in clients {
            let key = (tenant, credential);
            let valid = match verdicts.get(&key) {
                Some(v) => *v,
                None => match self.still_valid(&key.0, &key.1).await {
                    Ok(v) => {
                        verdicts.insert(key.clone(), v);
                        v
                    }
                    Err(e) => {
                        // The store cannot answer now: stop here rather than
                        // wait a store timeout per stream; the round is tried
                        // again in a second.
                        tracing::debug!(error = %e, "stream credential re-check failed; will retry");
                        complete = false;
                        break;
                    }
                },
            };
            if !valid {
                ended += 1;
                self.remove(&key.0, id, false);
            }
        }
        if ended > 0 {
            tracing::info!(
                streams = ended,
                "event streams ended: their credential no longer holds"
            );
        }
        complete
    }

    async fn still_valid(&self, tenant: &TenantId, credential: &Credential) -> StoreResult<bool> {
        Ok(match credential {
            Credential::ApiKey(hash) => self
                .store
                .authenticate(hash)
                .await?
                .is_some_and(|p| &p.tenant == tenant),
            Credential::Token { fingerprint } => {
                self.store.get_tenant(tenant).await?.is_some_and(|t| {
                    t.tier != Tier::Free
                        && t.jwt.as_ref().map(|j| j.fingerprint()).as_deref()
                            == Some(fingerprint.as_str())
                })
            }
            Credential::Session => self.store.get_tenant(tenant).await?.is_some(),
        })
    }

    /// Ends every stream of a tenant on this instance (they resume elsewhere or here).
    fn drop_tenant(&self, tenant: &TenantId) {
        let removed = self.lock().remove(tenant);
        if let Some(feed) = removed {
            self.clients
                .fetch_sub(feed.clients.len() as u64, Ordering::Relaxed);
            self.store.unfollow_events(tenant);
        }
    }
}

/// A tenant whose keys, tier or existence changed gets its streams on this
/// instance closed: a revoked or rotated key must not keep receiving events. The
/// clients reconnect at once (and resume); those whose key is no longer valid get
/// a 401. A reconnect of the feed (`All`, or missed messages) may hide such
/// changes, so then every stream's credential is checked against the store,
/// again each [`RECHECK_RETRY`] until the store has answered for all.
async fn close_on_credential_change(
    hub: Weak<Hub>,
    mut changes: broadcast::Receiver<crate::store::Invalidation>,
) {
    let mut recheck_due = false;
    loop {
        let change = if recheck_due {
            tokio::time::timeout(RECHECK_RETRY, changes.recv())
                .await
                .ok()
        } else {
            Some(changes.recv().await)
        };
        let Some(hub) = hub.upgrade() else { return };
        match change {
            Some(Ok(crate::store::Invalidation::Tenant(tenant))) => hub.drop_tenant(&tenant),
            Some(Ok(crate::store::Invalidation::All))
            | Some(Err(broadcast::error::RecvError::Lagged(_))) => recheck_due = true,
            Some(Err(broadcast::error::RecvError::Closed)) => return,
            None => {}
        }
        if recheck_due {
            recheck_due = !hub.recheck().await;
        }
    }
}

async fn run(hub: Weak<Hub>, mut live: broadcast::Receiver<Live>) {
    loop {
        let msg = live.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match msg {
            Ok(Live::Batch(tenant, events)) => hub.dispatch(&tenant, &events),
            Ok(Live::Resync) => hub.resync().await,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "event hub fell behind the live feed; resyncing");
                hub.resync().await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
