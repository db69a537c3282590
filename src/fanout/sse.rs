//! One client's `text/event-stream`: first the history it asked to resume from
//! (read page by page, so a long replay never sits in memory), then its live
//! share from the hub, with `: keep-alive` comments while idle. Every event id
//! at or below the newest one sent is dropped, so the seam between history and
//! live (and any catch-up the hub does) never repeats an event.

use super::hub::{Subscription, PAGE};
use crate::domain::TenantId;
use crate::events::{gap_frame, Event, EventId, Filter, History};
use crate::store::Store;
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Most frames written in one chunk.
const FRAMES_PER_CHUNK: usize = 64;
/// The reconnection delay advised to clients (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 2000;

/// Where a stream begins.
pub enum Start {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// Resume: the first page of history after the client's id.
    Replay { after: EventId, first: Vec<Event> },
    /// The client's id is not resumable: one `GAP` frame, then live.
    Gap(Bytes),
}

struct State {
    sub: Subscription,
    store: Arc<dyn Store>,
    tenant: TenantId,
    filter: Filter,
    backlog: VecDeque<Event>,
    /// Read more history after this id before going live.
    next_page: Option<EventId>,
    /// The newest id sent (or skipped by the filter) so far.
    last: Option<EventId>,
    hello: Option<Bytes>,
    keepalive: Interval,
    /// The client's socket, looked at every [`PEER_CHECK`] to notice a client
    /// that went away without anything being written to it (a keep-alive
    /// comment would only notice after up to 15 s).
    peer: Option<std::net::TcpStream>,
    peer_check: Interval,
    /// When the stream's credential (an exchanged token, a dashboard
    /// session) expires: the stream ends then.
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

/// How often an idle stream checks that its client is still connected.
const PEER_CHECK: Duration = Duration::from_secs(1);

/// Whether the client closed its end: a non-blocking peek that reads end of
/// stream (bytes waiting or "would block" mean it is still there).
pub fn peer_closed(peer: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let _ = peer.set_nonblocking(true);
    match peer.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// The client end of a stream.
pub struct Client {
    /// Idle time between `: keep-alive` comments.
    pub keepalive: Duration,
    /// Its socket, to notice when it goes away.
    pub peer: Option<std::net::TcpStream>,
    /// When its credential (an exchanged token, a dashboard session) expires.
    pub ends_at: Option<std::time::SystemTime>,
}

/// The body of one event-stream response.
pub fn stream(
    sub: Subscription,
    store: Arc<dyn Store>,
    tenant: TenantId,
    filter: Filter,
    start: Start,
    client: Client,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let Client {
        keepalive,
        peer,
        ends_at,
    } = client;
    let mut hello = BytesMut::new();
    hello.extend_from_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
    let (backlog, next_page, last) = match start {
        Start::Live => (VecDeque::new(), None, None),
        Start::Replay { after, first } => {
            let more = (first.len() == PAGE)
                .then(|| first.last().map(|e| e.id))
                .flatten();
            (first.into(), more, Some(after))
        }
        Start::Gap(frame) => {
            hello.extend_from_slice(&frame);
            (VecDeque::new(), None, None)
        }
    };
    let mut keepalive = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut peer_check = tokio::time::interval_at(Instant::now() + PEER_CHECK, PEER_CHECK);
    peer_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = State {
        sub,
        store,
        tenant,
        filter,
        backlog,
        next_page,
        last,
        hello: Some(hello.freeze()),
        keepalive,
        peer,
        peer_check,
        expiry: ends_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Box::pin(tokio::time::sleep(left))
        }),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok(chunk), st))
    })
}

impl State {
    fn is_new(&mut self, id: EventId) -> bool {
        if self.last.is_some_and(|l| id <= l) {
            return false;
        }
        self.last = Some(id);
        true
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        loop {
            if self.done || *self.sub.shutdown.borrow() {
                return None;
            }
            if self.expiry.as_ref().is_some_and(|e| e.is_elapsed()) {
                return None;
            }
            // History first.
            if !self.backlog.is_empty() {
                let mut chunk = BytesMut::new();
                let mut frames = 0;
                while frames < FRAMES_PER_CHUNK {
                    let Some(event) = self.backlog.pop_front() else {
                        break;
                    };
                    if self.is_new(event.id) && self.filter.matches(&event) {
                        chunk.extend_from_slice(&event.frame());
                        frames += 1;
                    }
                }
                if frames > 0 {
                    return Some(chunk.freeze());
                }
                continue;
            }
            if let Some(after) = self.next_page.take() {
                match self.store.events_after(&self.tenant, after, PAGE).await {
                    Ok(History::Events(events)) => {
                        if events.len() == PAGE {
                            self.next_page = events.last().map(|e| e.id);
                        }
                        self.backlog = events.into();
                        continue;
                    }
                    Ok(History::Gap { latest }) => {
                        // Trimmed while we replayed: the client must re-list.
                        return Some(gap_frame(latest, &after.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed; ending the stream so the client resumes");
                        self.done = true;
                        return None;
                    }
                }
            }
            // Then live.
            tokio::select! {
                biased;
                _ = self.sub.shutdown.changed() => return None,
                _ = &mut self.sub.removed => return None,
                _ = async {
                    match self.expiry.as_mut() {
                        Some(e) => e.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => return None,
                delivery = self.sub.rx.recv() => {
                    let delivery = delivery?;
                    if !self.is_new(delivery.event.id) {
                        continue;
                    }
                    let mut chunk = BytesMut::from(&delivery.frame[..]);
                    for _ in 1..FRAMES_PER_CHUNK {
                        let Ok(more) = self.sub.rx.try_recv() else { break };
                        if self.is_new(more.event.id) {
                            chunk.extend_from_slice(&more.frame);
                        }
                    }
                    return Some(chunk.freeze());
                }
                _ = self.keepalive.tick() => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                _ = self.peer_check.tick() => {
                    if self.peer.as_ref().is_some_and(peer_closed) {
                        return None;
                    }
                }
            }
        }
    }
}
