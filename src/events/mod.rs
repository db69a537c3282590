//! Lock events: what they are ([`Event`]), how they are written on an SSE stream,
//! and how they reach clients. Both stores produce events inside the same atomic
//! step as the change they describe, append them to a bounded per-tenant history
//! and publish them live; [`crate::fanout`] hands the live ones to this
//! instance's SSE clients.
//!
//! Event ids are `<ms>-<seq>` (a Redis Stream id in fleet mode): ordered per
//! tenant, so "every event after id X" is well defined for resume.

use crate::domain::{format_millis, Millis, TenantId};
use actix_web::web::Bytes;
use std::fmt;
use std::sync::Arc;

/// The id of an event: ordered per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };
    /// The largest id: nothing can follow it.
    pub const MAX: EventId = EventId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Parses `<ms>-<seq>` (decimal digits only); anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, seq) = raw.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The type of an event (its `event:` line and the `type` of its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Reserved,
    Unreserved,
    Extended,
    Expired,
    ForceReleased,
    /// A hold's expiry warning (contract section 18): `warnBeforeSeconds`
    /// before its `expiresAt`, once per lease unless it was released first.
    Expiring,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Reserved,
        EventKind::Unreserved,
        EventKind::Extended,
        EventKind::Expired,
        EventKind::ForceReleased,
        EventKind::Expiring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Unreserved => "UNRESERVED",
            Self::Extended => "EXTENDED",
            Self::Expired => "EXPIRED",
            Self::ForceReleased => "FORCE_RELEASED",
            Self::Expiring => "EXPIRING",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One change to a reservation, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub kind: EventKind,
    pub resource: String,
    pub requester: String,
    /// The label of the key whose request caused it (for `EXPIRED`: the key that
    /// made the reservation; `admin` for a force release).
    pub label: String,
    /// When the store recorded it.
    pub at: Millis,
    /// The reservation's expiry after a `RESERVED`/`EXTENDED`; the expiry it had
    /// for the other kinds. `None` when it has no TTL.
    pub expires_at: Option<Millis>,
    pub fencing_token: u64,
    /// The kind of the hold it is about (contract section 15).
    pub hold: crate::domain::Kind,
}

/// The `data` of one Server-Sent Event (its `id:` is `id`, its `event:` is
/// `type`): the wire shape of an [`Event`].
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Event)]
pub struct EventData<'a> {
    /// Ordered per tenant; send it back as Last-Event-ID to resume.
    #[schema(pattern = "^[0-9]+-[0-9]+$")]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub resource: &'a str,
    pub requester: &'a str,
    /// The key label (or `jwt:<sub>`, or `admin`) whose request caused it.
    pub api_key_label: &'a str,
    #[schema(format = DateTime)]
    pub at: String,
    /// Null when the reservation has no TTL.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub fencing_token: u64,
    /// `exclusive`, `shared` or `semaphore` (contract section 15).
    #[schema(pattern = "^(exclusive|shared|semaphore)$")]
    pub mode: &'static str,
    /// The semaphore's permits (only with `"mode":"semaphore"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<u16>,
}

impl Event {
    /// The JSON of the `data:` line.
    pub fn json(&self) -> String {
        serde_json::to_string(&EventData {
            id: self.id.to_string(),
            kind: self.kind,
            resource: &self.resource,
            requester: &self.requester,
            api_key_label: &self.label,
            at: format_millis(self.at),
            expires_at: self.expires_at.map(format_millis),
            fencing_token: self.fencing_token,
            mode: self.hold.mode(),
            limit: self.hold.limit(),
        })
        .unwrap_or_default()
    }

    /// The complete SSE frame (`id:`, `event:`, `data:` and the blank line).
    pub fn frame(&self) -> Bytes {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.kind.as_str(),
            self.json()
        ))
    }
}

/// The frame telling a client that events it asked for are no longer retained
/// (or its id was not one of ours): re-list, then follow the live stream.
pub fn gap_frame(latest: Option<EventId>, last_event_id: &str) -> Bytes {
    let id = latest.unwrap_or(EventId::ZERO).to_string();
    let data = serde_json::json!({"id": id, "type": "GAP", "lastEventId": last_event_id});
    Bytes::from(format!("id: {id}\nevent: GAP\ndata: {data}\n\n"))
}

/// An event ready to send: its frame is built once per instance, not per client.
#[derive(Debug)]
pub struct Delivery {
    pub event: Event,
    pub frame: Bytes,
}

impl Delivery {
    pub fn new(event: Event) -> Arc<Self> {
        let frame = event.frame();
        Arc::new(Self { event, frame })
    }
}

/// What a client asked to see (`resource`, `prefix`, `types`); the kinds combine
/// with AND, repeated `resource` values with OR.
#[derive(Debug, Clone)]
pub struct Filter {
    pub resources: Vec<String>,
    pub prefix: Option<String>,
    /// Only events of these requesters (exact; empty: all), so a holder can
    /// follow its own leases (contract section 18).
    pub requesters: Vec<String>,
    kinds: u8,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            prefix: None,
            requesters: Vec::new(),
            kinds: u8::MAX,
        }
    }
}

impl Filter {
    pub fn new(
        resources: Vec<String>,
        prefix: Option<String>,
        kinds: Option<Vec<EventKind>>,
    ) -> Self {
        Self {
            resources,
            prefix,
            requesters: Vec::new(),
            kinds: kinds.map_or(u8::MAX, |ks| ks.iter().fold(0, |acc, k| acc | k.bit())),
        }
    }

    /// Only events of these requesters (OR among them, AND with the rest).
    pub fn requesters(mut self, requesters: Vec<String>) -> Self {
        self.requesters = requesters;
        self
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.kinds & e.kind.bit() != 0
            && (self.resources.is_empty() || self.resources.contains(&e.resource))
            && (self.requesters.is_empty() || self.requesters.contains(&e.requester))
            && self
                .prefix
                .as_ref()
                .is_none_or(|p| e.resource.starts_with(p.as_str()))
    }
}

/// Live events as a store hands them to the hub.
#[derive(Debug, Clone)]
pub enum Live {
    /// Events of one tenant, in order.
    Batch(TenantId, Arc<Vec<Event>>),
    /// The live feed may have missed messages (the subscriber reconnected): every
    /// followed tenant must be caught up from its history.
    Resync,
}

/// A page of a tenant's history after some id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// The events after the id, oldest first (at most the page size).
    Events(Vec<Event>),
    /// Events after the id are no longer retained (or the id is not from this
    /// history); `latest` is the newest retained id.
    Gap { latest: Option<EventId> },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, resource: &str) -> Event {
        Event {
            id: EventId { ms: 1, seq: 0 },
            kind,
            resource: resource.into(),
            requester: "app".into(),
            label: "default".into(),
            at: 0,
            expires_at: None,
            fencing_token: 1,
            hold: crate::domain::Kind::Exclusive,
        }
    }

    #[test]
    fn ids_parse_strictly_and_order() {
        assert_eq!(EventId::parse("12-3"), Some(EventId { ms: 12, seq: 3 }));
        for bad in [
            "",
            "12",
            "-3",
            "12-",
            "a-1",
            "1-+2",
            "1-2-3",
            " 1-2",
            "99999999999999999999999-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
        assert!(EventId { ms: 2, seq: 0 } > EventId { ms: 1, seq: 9 });
    }

    #[test]
    fn filters_combine() {
        let f = Filter::new(
            vec!["a".into(), "b".into()],
            None,
            Some(vec![EventKind::Reserved]),
        );
        assert!(f.matches(&ev(EventKind::Reserved, "a")));
        assert!(!f.matches(&ev(EventKind::Unreserved, "a")));
        assert!(!f.matches(&ev(EventKind::Reserved, "c")));
        let p = Filter::new(vec![], Some("job/".into()), None);
        let q = Filter::default().requesters(vec!["app".into(), "other".into()]);
        assert!(q.matches(&ev(EventKind::Reserved, "x")));
        assert!(!Filter::default()
            .requesters(vec!["someone-else".into()])
            .matches(&ev(EventKind::Reserved, "x")));
        assert!(p.matches(&ev(EventKind::Expired, "job/1")));
        assert!(!p.matches(&ev(EventKind::Expired, "jobs")));
    }

    #[test]
    fn frames_carry_the_contract_fields() {
        let f = ev(EventKind::ForceReleased, "r").frame();
        let text = std::str::from_utf8(&f).expect("utf-8");
        assert!(text.starts_with("id: 1-0\nevent: FORCE_RELEASED\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        let data: serde_json::Value = serde_json::from_str(
            text.lines()
                .nth(2)
                .and_then(|l| l.strip_prefix("data: "))
                .unwrap_or(""),
        )
        .expect("json");
        assert_eq!(data["apiKeyLabel"], "default");
        assert_eq!(data["expiresAt"], serde_json::Value::Null);
        assert_eq!(data["id"], "1-0");
    }
}
