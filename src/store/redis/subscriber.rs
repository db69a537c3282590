//! This instance's one pub/sub connection: the invalidation channel plus the
//! event channel of every tenant a local SSE client follows (and only those).

use super::keys;
use crate::domain::TenantId;
use crate::events::{Event, EventId, EventKind, Live};
use crate::store::topology::{Conn, Topology};
use crate::store::{Invalidation, StoreError, StoreResult, WaiterId};
use futures_util::StreamExt;
use redis::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

pub enum SubCmd {
    Follow(TenantId, oneshot::Sender<StoreResult<()>>),
    Unfollow(TenantId),
}

/// Where the subscriber task delivers what it hears.
pub struct Feeds {
    pub invalidations: broadcast::Sender<Invalidation>,
    pub live: broadcast::Sender<Live>,
    /// Grants to waiting requests, fleet-wide (each instance picks its own).
    pub grants: broadcast::Sender<(TenantId, WaiterId)>,
    pub subscribed: Arc<AtomicBool>,
    /// When the feed last answered a ping ([`monotonic_ms`]).
    pub last_pong: Arc<AtomicU64>,
    pub op_timeout: Duration,
}

/// How often the feed is pinged, and how stale its last answer may be before
/// cached credentials stop being trusted: a pub/sub connection that dies
/// silently (no FIN) could otherwise hide a revocation for as long as the ping
/// takes to fail. The contract's bound for revocation is 1 s.
pub const PING_EVERY: Duration = Duration::from_millis(200);
pub const PONG_FRESH_MS: u64 = 500;

/// Milliseconds on this process's monotonic clock.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    START.elapsed().as_millis() as u64
}

/// Decodes one published message: a JSON array of
/// `[id, type, resource, requester, label, atMs, expiresAtMs or "", fencingToken,
/// kind code]` (the kind code of `Kind::code`).
fn live_events(payload: &[u8]) -> Option<Vec<Event>> {
    let rows: Vec<[String; 9]> = serde_json::from_slice(payload).ok()?;
    rows.into_iter()
        .map(|[id, kind, resource, requester, label, at, ea, ft, kc]| {
            Some(Event {
                id: EventId::parse(&id)?,
                kind: EventKind::parse(&kind)?,
                resource,
                requester,
                label,
                at: at.parse().ok()?,
                expires_at: ea.parse().ok(),
                fencing_token: ft.parse().ok()?,
                hold: crate::domain::Kind::from_code(&kc)?,
            })
        })
        .collect()
}

/// Keeps this instance's one pub/sub connection alive for as long as the process
/// runs: the invalidation channel plus the event channel of every tenant that a
/// local SSE client follows (and only those). Every (re)connect is announced as
/// `Invalidation::All` and `Live::Resync`, because messages published while it
/// was down are lost: the auth cache starts over and the hub catches its clients
/// up from the streams. While it is down the auth cache is bypassed.
pub async fn run(
    conn: Conn,
    topology: Topology,
    feeds: Feeds,
    mut commands: mpsc::UnboundedReceiver<SubCmd>,
) {
    // Followed tenants by their tag (channel names carry the tag, not the id).
    let mut followed: HashMap<String, TenantId> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    for n in 0.. {
        let channels: Vec<String> = followed
            .values()
            .map(|t| keys::events(&keys::prefix(t)))
            .collect();
        let attempt = async {
            let client = conn.pubsub_client(&topology, n).await?;
            let addr = client.get_connection_info().addr().to_string();
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys::AUTH_CHANNEL).await?;
            pubsub.subscribe(keys::GRANTS_CHANNEL).await?;
            if !channels.is_empty() {
                pubsub.subscribe(&channels).await?;
            }
            redis::RedisResult::Ok((pubsub, addr))
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok((pubsub, addr))) => {
                backoff = Duration::from_millis(50);
                let (mut sink, mut stream) = pubsub.split();
                let _ = feeds.invalidations.send(Invalidation::All);
                let _ = feeds.live.send(Live::Resync);
                feeds.last_pong.store(monotonic_ms(), Ordering::SeqCst);
                feeds.subscribed.store(true, Ordering::SeqCst);
                tracing::info!(tenants = followed.len(), "pub/sub feed subscribed");
                let mut ping = tokio::time::interval(PING_EVERY);
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => route_message(&msg, &feeds, &followed),
                            None => break,
                        },
                        cmd = commands.recv() => match cmd {
                            None => return,
                            Some(SubCmd::Follow(tenant, reply)) => {
                                let chan = keys::events(&keys::prefix(&tenant));
                                let done = tokio::time::timeout(
                                    feeds.op_timeout,
                                    sink.subscribe(&chan),
                                ).await;
                                if matches!(done, Ok(Ok(()))) {
                                    followed.insert(keys::tag(&tenant), tenant);
                                    let _ = reply.send(Ok(()));
                                } else {
                                    let _ = reply.send(Err(StoreError::Unavailable(
                                        "event feed: subscribe failed".into(),
                                    )));
                                    break;
                                }
                            }
                            Some(SubCmd::Unfollow(tenant)) => {
                                if followed.remove(&keys::tag(&tenant)).is_some() {
                                    let chan = keys::events(&keys::prefix(&tenant));
                                    let done = tokio::time::timeout(
                                        feeds.op_timeout,
                                        sink.unsubscribe(&chan),
                                    ).await;
                                    if !matches!(done, Ok(Ok(()))) {
                                        break;
                                    }
                                }
                            }
                        },
                        _ = ping.tick() => {
                            // A dead peer (a paused or unplugged Redis) sends no FIN;
                            // only a ping that goes unanswered reveals it.
                            // (In RESP2 subscribed mode PING answers an array, so
                            // accept any reply, not just "PONG".) Meanwhile the
                            // cache is trusted only while the last answer is fresh.
                            let alive = tokio::time::timeout(
                                Duration::from_millis(800),
                                sink.ping::<Value>(),
                            ).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                            if !conn.still_master(&addr) {
                                tracing::info!(old = %addr, "the master moved; moving the pub/sub feed");
                                break;
                            }
                            feeds.last_pong.store(monotonic_ms(), Ordering::SeqCst);
                        }
                    }
                }
                feeds.subscribed.store(false, Ordering::SeqCst);
                let _ = feeds.invalidations.send(Invalidation::All);
                tracing::warn!("pub/sub feed lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "pub/sub feed: connect failed");
            }
            Err(_) => tracing::debug!("pub/sub feed: connect timed out"),
        }
        // Wait before the next attempt, answering requests meanwhile: a follow
        // cannot be honoured now (its client gets a 503 and retries).
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Follow(_, reply)) => {
                        let _ = reply.send(Err(StoreError::Unavailable(
                            "event feed: reconnecting to Redis".into(),
                        )));
                    }
                    Some(SubCmd::Unfollow(tenant)) => {
                        followed.remove(&keys::tag(&tenant));
                    }
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Hands one pub/sub message to the feed it belongs to.
fn route_message(msg: &redis::Msg, feeds: &Feeds, followed: &HashMap<String, TenantId>) {
    let channel = msg.get_channel_name();
    if channel == keys::AUTH_CHANNEL {
        let payload: String = msg.get_payload().unwrap_or_default();
        let inv = TenantId::parse(&payload)
            .map(Invalidation::Tenant)
            .unwrap_or(Invalidation::All);
        let _ = feeds.invalidations.send(inv);
    } else if channel == keys::GRANTS_CHANNEL {
        let payload: String = msg.get_payload().unwrap_or_default();
        let granted = payload.split_once(' ').and_then(|(t, w)| {
            Some((
                TenantId::parse(t).ok()?,
                WaiterId(u128::from_str_radix(w, 16).ok()?),
            ))
        });
        if let Some(g) = granted {
            let _ = feeds.grants.send(g);
        }
    } else if let Some(tenant) = keys::tag_of_channel(channel).and_then(|t| followed.get(t)) {
        match live_events(msg.get_payload_bytes()) {
            Some(events) => {
                let _ = feeds
                    .live
                    .send(Live::Batch(tenant.clone(), Arc::new(events)));
            }
            None => {
                tracing::error!(%tenant, "undecodable event message; resyncing from the stream");
                let _ = feeds.live.send(Live::Resync);
            }
        }
    }
}
