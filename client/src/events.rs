//! The tenant's event stream (`GET /api/v1/events`, contract section 4) as a
//! [`Stream`] of [`Event`]s that survives a dropped connection: it reconnects
//! by itself (after the server's `retry:` delay, then with back-off) and sends
//! the `Last-Event-ID` of the last event it handed out, so the service replays
//! what happened in between — none lost, none repeated.

use crate::client::{api_error, Client};
use crate::error::Error;
use crate::types::Mode;
use futures_util::Stream;
use rand::Rng;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Reserved,
    Unreserved,
    Extended,
    Expired,
    ForceReleased,
    Expiring,
    /// The resume point was older than the retained history (or not an id):
    /// events were lost; re-list, then follow the stream.
    Gap,
    /// A type this version does not know.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Unreserved => "UNRESERVED",
            Self::Extended => "EXTENDED",
            Self::Expired => "EXPIRED",
            Self::ForceReleased => "FORCE_RELEASED",
            Self::Expiring => "EXPIRING",
            Self::Gap => "GAP",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// One lock event (the `data:` of an SSE event).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Ordered per tenant; what a reconnect sends as `Last-Event-ID`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Empty on `GAP`.
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub requester: String,
    #[serde(default)]
    pub api_key_label: String,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub fencing_token: Option<u64>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub limit: Option<u16>,
    /// `GAP` only: the id that could not be resumed.
    #[serde(default)]
    pub last_event_id: Option<String>,
}

/// Which events to follow, and how to reconnect.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub resources: Vec<String>,
    pub prefix: Option<String>,
    pub types: Vec<EventKind>,
    pub requesters: Vec<String>,
    /// Start after this event (as a reconnect would).
    pub last_event_id: Option<String>,
    /// The pause before a reconnect; default: the server's `retry:` advice.
    pub reconnect_delay: Option<Duration>,
    /// A connection silent this long is given up and reopened (the service
    /// sends a keep-alive at least every 15 s). Default 45 s.
    pub idle_timeout: Option<Duration>,
}

impl EventFilter {
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    pub fn types(mut self, types: &[EventKind]) -> Self {
        self.types = types.to_vec();
        self
    }

    pub fn requester(mut self, requester: impl Into<String>) -> Self {
        self.requesters.push(requester.into());
        self
    }

    pub fn after(mut self, last_event_id: impl Into<String>) -> Self {
        self.last_event_id = Some(last_event_id.into());
        self
    }

    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = Some(delay);
        self
    }

    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> = Vec::new();
        q.extend(self.resources.iter().map(|r| ("resource", r.clone())));
        q.extend(self.requesters.iter().map(|r| ("requester", r.clone())));
        if let Some(p) = &self.prefix {
            q.push(("prefix", p.clone()));
        }
        if !self.types.is_empty() {
            let names: Vec<_> = self.types.iter().map(|t| t.as_str()).collect();
            q.push(("types", names.join(",")));
        }
        q
    }
}

/// The live events of the tenant, resumed across reconnections. Ends only
/// after an error no reconnect can mend (`400`, `401`, `403`), which it yields
/// first; a transient failure is retried without being yielded.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    last_id: Mutex<Option<String>>,
    connections: AtomicU64,
}

impl EventStream {
    pub(crate) fn open(client: Client, filter: EventFilter) -> Self {
        let shared = Arc::new(Shared {
            last_id: Mutex::new(filter.last_event_id.clone()),
            connections: AtomicU64::new(0),
        });
        let reader = Reader {
            client,
            query: filter.query(),
            advised: Duration::from_secs(2),
            reconnect_delay: filter.reconnect_delay,
            idle_timeout: filter.idle_timeout.unwrap_or(Duration::from_secs(45)),
            res: None,
            buf: String::new(),
            failures: 0,
            done: false,
            shared: shared.clone(),
        };
        let inner = futures_util::stream::unfold(reader, |mut r| async move {
            r.next().await.map(|item| (item, r))
        });
        Self {
            inner: Box::pin(inner),
            shared,
        }
    }

    /// The id of the last event handed out: where a reconnect resumes.
    pub fn last_event_id(&self) -> Option<String> {
        self.shared
            .last_id
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// How many times a connection was opened (1 + the reconnects).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("last_event_id", &self.last_event_id())
            .field("connections", &self.connections())
            .finish()
    }
}

struct Reader {
    client: Client,
    query: Vec<(&'static str, String)>,
    /// The server's `retry:` advice.
    advised: Duration,
    reconnect_delay: Option<Duration>,
    idle_timeout: Duration,
    res: Option<reqwest::Response>,
    /// Text received and not yet a whole event (`\r` removed).
    buf: String,
    /// Connection attempts that failed in a row.
    failures: u32,
    done: bool,
    shared: Arc<Shared>,
}

enum Connect {
    Open(reqwest::Response),
    Retry,
    Fatal(Error),
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(item) = self.take_event() {
                return Some(item);
            }
            let Some(res) = self.res.as_mut() else {
                match self.connect().await {
                    Connect::Open(res) => {
                        self.failures = 0;
                        self.res = Some(res);
                    }
                    Connect::Retry => {
                        self.failures += 1;
                        tokio::time::sleep(self.pause()).await;
                    }
                    Connect::Fatal(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match tokio::time::timeout(self.idle_timeout, res.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    self.buf.extend(
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .filter(|c| *c != '\r'),
                    );
                }
                // The stream ended (the instance stopped, or dropped a slow
                // client), broke, or went silent: resume from the last id.
                _ => {
                    self.res = None;
                    self.buf.clear();
                    tokio::time::sleep(self.pause()).await;
                }
            }
        }
    }

    /// Before a reconnect: the chosen or advised delay, doubled per failed
    /// attempt in a row up to 30 s, with jitter.
    fn pause(&self) -> Duration {
        let first = self.reconnect_delay.unwrap_or(self.advised);
        let exp = first
            .saturating_mul(1u32 << self.failures.min(10))
            .min(Duration::from_secs(30).max(first));
        exp.mul_f64(0.8 + 0.4 * rand::rng().random::<f64>())
    }

    async fn connect(&mut self) -> Connect {
        let inner = &self.client.inner;
        let mut req = inner
            .http
            .get(format!("{}/api/v1/events", inner.base))
            .header("X-Api-Key", &inner.api_key)
            .header("Accept", "text/event-stream")
            .query(&self.query);
        let last = self
            .shared
            .last_id
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id);
        }
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::time::timeout(inner.timeout, req.send()).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) if e.is_builder() => {
                return Connect::Fatal(Error::InvalidArgument(e.to_string()))
            }
            _ => return Connect::Retry,
        };
        let status = res.status();
        if status == StatusCode::OK {
            return Connect::Open(res);
        }
        let headers = res.headers().clone();
        let body = res.bytes().await.unwrap_or_default();
        let err = api_error(status, &headers, &body);
        if matches!(err.status, 400 | 401 | 403 | 404) {
            Connect::Fatal(Error::Api(err))
        } else {
            Connect::Retry
        }
    }

    /// The next whole event in the buffer, if any (comments and `retry:`
    /// blocks are consumed on the way).
    fn take_event(&mut self) -> Option<Result<Event, Error>> {
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, Vec::new());
            for line in block.lines() {
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "" => {} // a comment (keep-alive)
                    "id" => id = Some(value.to_string()),
                    "data" => data.push(value),
                    "retry" => {
                        if let Ok(ms) = value.trim().parse::<u64>() {
                            self.advised = Duration::from_millis(ms);
                        }
                    }
                    _ => {} // `event:` repeats data.type
                }
            }
            if let Some(id) = id {
                if let Ok(mut last) = self.shared.last_id.lock() {
                    *last = Some(id);
                }
            }
            if data.is_empty() {
                continue;
            }
            let text = data.join("\n");
            return Some(serde_json::from_str(&text).map_err(|e| Error::Decode {
                status: 200,
                message: format!("event data {text:?}: {e}"),
            }));
        }
        None
    }
}
