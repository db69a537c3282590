//! The recorded history of a fault run and the checker over it.
//!
//! Everything the checker judges comes from what clients were told (fencing
//! tokens, `reservedAt` and `expiresAt` from the store's clock) and from what
//! the fenced test resource saw, never from the service's own logs. The store
//! clock (Redis `TIME`) and the harness clock are the same host clock here, so
//! a client's send time can bound when its release took effect.
//!
//! Each grant carries its kind (contract section 15): an exclusive grant may
//! overlap nothing, a shared one only other shared ones, and a semaphore
//! permit only permits of a semaphore of the same limit, at most `limit` of
//! them at any moment.

use std::collections::HashMap;
use std::sync::Mutex;

/// The kind of hold a grant is (what the reserve item asked for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GrantKind {
    #[default]
    Exclusive,
    /// A read lock: any number of shared grants may overlap (up to the
    /// service's 10,000 holders), nothing else.
    Shared,
    /// A permit of a semaphore of this many permits.
    Semaphore(u16),
}

/// The most shared holders one resource admits (`MAX_HOLDERS`).
const MAX_SHARED: usize = 10_000;

impl GrantKind {
    /// Whether a grant of this kind may overlap a grant of kind `other`.
    fn joins(self, other: GrantKind) -> bool {
        match (self, other) {
            (GrantKind::Shared, GrantKind::Shared) => true,
            (GrantKind::Semaphore(a), GrantKind::Semaphore(b)) => a == b,
            _ => false,
        }
    }

    /// Whether a resource may have several grants of this kind at once.
    fn is_multi(self) -> bool {
        self != GrantKind::Exclusive
    }

    /// The most grants of this kind one resource may have at once.
    fn capacity(self) -> usize {
        match self {
            GrantKind::Exclusive => 1,
            GrantKind::Shared => MAX_SHARED,
            GrantKind::Semaphore(n) => usize::from(n),
        }
    }

    /// How a report names it.
    pub fn name(self) -> String {
        match self {
            GrantKind::Exclusive => "exclusive".into(),
            GrantKind::Shared => "shared".into(),
            GrantKind::Semaphore(n) => format!("semaphore({n})"),
        }
    }
}

/// One grant a client was told about: one RESERVED item of a reserve answer
/// (a batch of k items is one call and up to k grants, each with its own
/// fencing token and expiry).
#[derive(Debug, Clone)]
pub struct Grant {
    pub resource: String,
    pub client: usize,
    /// What the item asked for (and was granted as).
    pub kind: GrantKind,
    pub token: u64,
    /// `reservedAt`, store clock, ms since the epoch.
    pub start_ms: i64,
    /// The latest `expiresAt` the client was told (reserve or a later extend).
    pub expires_ms: i64,
    /// When the client first sent its release (the release took effect no
    /// earlier than this).
    pub release_sent_ms: Option<i64>,
}

impl Grant {
    /// The latest the grant may be taken to be held until, as its holder
    /// understood it: its confirmed expiry, or its release if earlier.
    pub fn end_ms(&self) -> i64 {
        match self.release_sent_ms {
            Some(r) => r.min(self.expires_ms),
            None => self.expires_ms,
        }
    }
}

/// One write attempt to the fenced test resource, in the resource's own order.
#[derive(Debug, Clone)]
pub struct Write {
    pub seq: u64,
    pub resource: String,
    /// Index into the history's grants.
    pub grant: usize,
    pub accepted: bool,
}

/// The fenced test resource: a store that keeps, per resource, the highest
/// fencing token it has accepted and refuses any write carrying a lower one.
/// Unfenced, it accepts every write (what a plain database would do).
pub struct FencedResource {
    fenced: bool,
    inner: Mutex<FencedInner>,
}

#[derive(Default)]
struct FencedInner {
    highest: HashMap<String, u64>,
    writes: Vec<Write>,
}

impl FencedResource {
    pub fn new(fenced: bool) -> Self {
        Self {
            fenced,
            inner: Mutex::new(FencedInner::default()),
        }
    }

    /// A write by `grant` (its fencing token `token`); true if accepted.
    pub fn write(&self, resource: &str, grant: usize, token: u64) -> bool {
        let mut g = self.inner.lock().expect("fenced resource lock");
        let highest = g.highest.get(resource).copied().unwrap_or(0);
        let accepted = !self.fenced || token >= highest;
        if accepted && token > highest {
            g.highest.insert(resource.to_string(), token);
        }
        let seq = g.writes.len() as u64;
        g.writes.push(Write {
            seq,
            resource: resource.to_string(),
            grant,
            accepted,
        });
        accepted
    }

    pub fn writes(&self) -> Vec<Write> {
        self.inner
            .lock()
            .expect("fenced resource lock")
            .writes
            .clone()
    }
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub grants: usize,
    pub writes: usize,
    /// Writes made after a newer grant of the resource had written.
    pub stale_writes: usize,
    pub stale_rejected: usize,
}

/// The order of grants of one resource, by the store clock (ties by token).
fn order(g: &Grant) -> (i64, u64) {
    (g.start_ms, g.token)
}

/// Checks the history:
/// 1. the grants of one resource that overlap (one starts before another's
///    end) are of kinds that may join (both shared, or both permits of a
///    semaphore of one limit), and no more of them overlap at any moment than
///    their kind admits (`limit` permits; one exclusive grant);
/// 2. fencing tokens of one resource never repeat and rise with grant order
///    (across every kind);
/// 3. every stale write (one made after a newer grant of the resource wrote)
///    is rejected, and, on a fenced resource, no fresh write is. Only
///    exclusive grants write: concurrent shared holders and permits are
///    readers, and their tokens need not rise in the order they act.
pub fn check(grants: &[Grant], writes: &[Write], fenced: bool) -> Verdict {
    let mut v = Verdict {
        grants: grants.len(),
        writes: writes.len(),
        ..Verdict::default()
    };
    let mut by_resource: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in grants.iter().enumerate() {
        by_resource.entry(g.resource.as_str()).or_default().push(i);
    }
    for (resource, ids) in &mut by_resource {
        ids.sort_by_key(|&i| order(&grants[i]));
        // 1. A sweep in grant order: `live` holds every earlier grant not yet
        // ended when the next one starts (a grant that ends as another starts
        // does not overlap it), so it is what was held at that moment.
        let mut live: Vec<usize> = Vec::new();
        for &i in ids.iter() {
            let g = &grants[i];
            live.retain(|&p| grants[p].end_ms() > g.start_ms);
            if let Some(&p) = live.iter().find(|&&p| !g.kind.joins(grants[p].kind)) {
                let prev = &grants[p];
                v.violations.push(format!(
                    "overlap on {resource:?}: client {} was granted it {} at {} (token {}) while \
                     client {} held it {} from {} until {} (token {})",
                    g.client,
                    g.kind.name(),
                    g.start_ms,
                    g.token,
                    prev.client,
                    prev.kind.name(),
                    prev.start_ms,
                    prev.end_ms(),
                    prev.token
                ));
            } else if g.kind.is_multi() && live.len() >= g.kind.capacity() {
                let holders: Vec<String> = live
                    .iter()
                    .map(|&p| format!("client {} (token {})", grants[p].client, grants[p].token))
                    .collect();
                v.violations.push(format!(
                    "too many holders on {resource:?}: client {} was granted it {} at {} \
                     (token {}) while {} held it: {}",
                    g.client,
                    g.kind.name(),
                    g.start_ms,
                    g.token,
                    live.len(),
                    holders.join(", ")
                ));
            }
            // A grant that ended as it started (released at once) holds nothing.
            if g.end_ms() > g.start_ms {
                live.push(i);
            }
        }
        // 2. Fencing tokens rise strictly in grant order.
        for w in ids.windows(2) {
            let (a, b) = (&grants[w[0]], &grants[w[1]]);
            if b.token <= a.token {
                v.violations.push(format!(
                    "fencing token on {resource:?} did not rise: {} (granted at {}) then {} \
                     (granted at {})",
                    a.token, a.start_ms, b.token, b.start_ms
                ));
            }
        }
    }
    // 3. Stale writes.
    let mut newest_writer: HashMap<&str, (i64, u64)> = HashMap::new();
    let mut sorted: Vec<&Write> = writes.iter().collect();
    sorted.sort_by_key(|w| w.seq);
    for w in sorted {
        let Some(g) = grants.get(w.grant) else {
            v.violations.push(format!("write {} names no grant", w.seq));
            continue;
        };
        if g.kind != GrantKind::Exclusive {
            v.violations.push(format!(
                "write {} by a {} grant of {:?} (only exclusive holders write)",
                w.seq,
                g.kind.name(),
                w.resource
            ));
            continue;
        }
        let newest = newest_writer.get(w.resource.as_str()).copied();
        let stale = newest.is_some_and(|n| n > order(g));
        if stale {
            v.stale_writes += 1;
            if w.accepted {
                v.violations.push(format!(
                    "stale write accepted on {:?}: client {} wrote with token {} (granted at {}) \
                     after a newer grant (granted at {}, token {}) had written",
                    w.resource,
                    g.client,
                    g.token,
                    g.start_ms,
                    newest.map(|n| n.0).unwrap_or_default(),
                    newest.map(|n| n.1).unwrap_or_default()
                ));
            } else {
                v.stale_rejected += 1;
            }
        } else if !w.accepted && fenced {
            v.violations.push(format!(
                "fresh write rejected on {:?}: client {} with token {}",
                w.resource, g.client, g.token
            ));
        }
        if w.accepted && newest.is_none_or(|n| order(g) > n) {
            newest_writer.insert(w.resource.as_str(), order(g));
        }
    }
    v
}

/// The checker itself is tested on made-up histories, so a clean verdict on a
/// real run means something.
mod checker_catches {
    use super::*;

    fn grant(resource: &str, client: usize, token: u64, start: i64, end: i64) -> Grant {
        Grant {
            resource: resource.into(),
            client,
            kind: GrantKind::Exclusive,
            token,
            start_ms: start,
            expires_ms: end,
            release_sent_ms: None,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let mut a = grant("r", 1, 10, 1000, 3000);
        a.release_sent_ms = Some(1500);
        let grants = [
            a,
            grant("r", 2, 11, 1600, 3600),
            grant("s", 1, 5, 1000, 3000),
        ];
        let fence = FencedResource::new(true);
        assert!(fence.write("r", 0, 10));
        assert!(fence.write("r", 1, 11));
        assert!(!fence.write("r", 0, 10), "the fence refuses a lower token");
        let v = check(&grants, &fence.writes(), true);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.stale_writes, v.stale_rejected), (1, 1));
    }

    #[test]
    fn overlapping_grants() {
        let grants = [grant("r", 1, 10, 1000, 3000), grant("r", 2, 11, 2500, 4500)];
        let v = check(&grants, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].starts_with("overlap"));
        // A release sent before the second grant ends the first one.
        let mut g = grants.clone();
        g[0].release_sent_ms = Some(2400);
        assert!(check(&g, &[], true).violations.is_empty());
        // An overlap hidden behind a short grant is still found.
        let grants = [
            grant("r", 1, 10, 1000, 9000),
            grant("r", 2, 11, 9000, 9500),
            grant("r", 3, 12, 1500, 2000),
        ];
        assert!(!check(&grants, &[], true).violations.is_empty());
    }

    #[test]
    fn tokens_that_repeat_or_go_back() {
        let grants = [grant("r", 1, 10, 1000, 2000), grant("r", 2, 10, 2000, 3000)];
        assert!(check(&grants, &[], true).violations[0].starts_with("fencing token"));
        let grants = [grant("r", 1, 10, 1000, 2000), grant("r", 2, 9, 2000, 3000)];
        assert!(check(&grants, &[], true).violations[0].starts_with("fencing token"));
    }

    /// A batch reserve is one call but one grant per item: each item has its
    /// own fencing token and its own expiry (an extend may confirm some
    /// items and not others), and is judged on its own resource.
    #[test]
    fn batches_are_judged_item_by_item() {
        // Client 1 reserves r, s and t in one call at 1000 (tokens rise within
        // the batch); its heartbeat confirms only s, until 5000.
        let mut batch = [
            grant("r", 1, 10, 1000, 3000),
            grant("s", 1, 11, 1000, 5000),
            grant("t", 1, 12, 1000, 3000),
        ];
        // Client 2's batch at 3000 gets r and s (s is still held by client 1);
        // t is granted to client 3 alone at 3000 with a token lower than
        // client 2's (tokens rise per resource, not across resources).
        let later = [
            grant("r", 2, 20, 3000, 5000),
            grant("s", 2, 21, 3000, 5000),
            grant("t", 3, 13, 3000, 5000),
        ];
        let history: Vec<Grant> = batch.iter().chain(&later).cloned().collect();
        let v = check(&history, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0].starts_with("overlap on \"s\""),
            "{:?}",
            v.violations
        );
        // The batch's release, sent before client 2's reserve, ends all three.
        for g in &mut batch {
            g.release_sent_ms = Some(2900);
        }
        let history: Vec<Grant> = batch.iter().chain(&later).cloned().collect();
        assert!(check(&history, &[], true).violations.is_empty());
        // Each item writes with its own token: client 1's late write to s is
        // stale once client 2's grant of s has written, and only that one.
        let fence = FencedResource::new(false);
        for (i, g) in history.iter().enumerate() {
            assert!(fence.write(&g.resource, i, g.token));
        }
        assert!(fence.write("s", 1, 11), "unfenced, the stale write lands");
        assert!(fence.write("t", 5, 13));
        let v = check(&history, &fence.writes(), false);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].starts_with("stale write accepted on \"s\""));
        assert_eq!(v.stale_writes, 1);
    }

    #[test]
    fn a_stale_write_that_got_through() {
        let grants = [grant("r", 1, 10, 1000, 2000), grant("r", 2, 11, 2000, 4000)];
        let fence = FencedResource::new(false);
        assert!(fence.write("r", 1, 11));
        assert!(fence.write("r", 0, 10), "unfenced, the stale write lands");
        let v = check(&grants, &fence.writes(), false);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].starts_with("stale write accepted"));
    }

    fn of(
        kind: GrantKind,
        resource: &str,
        client: usize,
        token: u64,
        start: i64,
        end: i64,
    ) -> Grant {
        Grant {
            kind,
            ..grant(resource, client, token, start, end)
        }
    }

    const SEM5: GrantKind = GrantKind::Semaphore(5);

    /// Five permits of a 5-permit semaphore at once are legal; a sixth
    /// overlapping them all is flagged, once, naming the holders.
    #[test]
    fn six_permits_of_a_five_permit_semaphore() {
        let five: Vec<Grant> = (0..5)
            .map(|c| of(SEM5, "sem", c, 10 + c as u64, 1000 + c as i64, 5000))
            .collect();
        let v = check(&five, &[], true);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        let mut six = five.clone();
        six.push(of(SEM5, "sem", 5, 15, 1005, 5000));
        let v = check(&six, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0].starts_with("too many holders on \"sem\": client 5"),
            "{:?}",
            v.violations
        );
        // The sixth is legal once one of the five is released before it.
        six[2].release_sent_ms = Some(1005);
        assert!(check(&six, &[], true).violations.is_empty());
        // An overlap of six found at a later moment: permits that come and go
        // (never more than five at once), then a burst that makes six.
        let mut rolling: Vec<Grant> = (0..20)
            .map(|c| {
                of(
                    SEM5,
                    "sem",
                    c,
                    100 + c as u64,
                    1000 + 100 * c as i64,
                    1450 + 100 * c as i64,
                )
            })
            .collect();
        assert!(check(&rolling, &[], true).violations.is_empty());
        for c in 0..2 {
            rolling.push(of(SEM5, "sem", 50 + c, 200 + c as u64, 3000, 3100));
        }
        let v = check(&rolling, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].starts_with("too many holders"));
    }

    #[test]
    fn an_exclusive_grant_overlapping_a_shared_one() {
        let grants = [
            of(GrantKind::Shared, "rw", 1, 10, 1000, 3000),
            of(GrantKind::Shared, "rw", 2, 11, 1500, 3000),
            of(GrantKind::Exclusive, "rw", 3, 12, 2000, 4000),
        ];
        let v = check(&grants, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0].starts_with("overlap on \"rw\": client 3 was granted it exclusive"),
            "{:?}",
            v.violations
        );
        // The writer after both readers left is legal.
        let mut g = grants.clone();
        g[0].release_sent_ms = Some(1900);
        g[1].release_sent_ms = Some(2000);
        assert!(check(&g, &[], true).violations.is_empty());
    }

    #[test]
    fn a_shared_grant_overlapping_an_exclusive_one() {
        let grants = [
            of(GrantKind::Exclusive, "rw", 1, 10, 1000, 3000),
            of(GrantKind::Shared, "rw", 2, 11, 2000, 4000),
        ];
        let v = check(&grants, &[], true);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0].starts_with("overlap on \"rw\": client 2 was granted it shared"),
            "{:?}",
            v.violations
        );
        let mut g = grants.clone();
        g[0].release_sent_ms = Some(2000);
        assert!(check(&g, &[], true).violations.is_empty());
    }

    /// Readers share; permits of one limit share; nothing else does.
    #[test]
    fn kinds_that_may_and_may_not_share() {
        let readers: Vec<Grant> = (0..50)
            .map(|c| {
                of(
                    GrantKind::Shared,
                    "rw",
                    c,
                    10 + c as u64,
                    1000 + c as i64,
                    9000,
                )
            })
            .collect();
        assert!(check(&readers, &[], true).violations.is_empty());
        for (a, b) in [
            (SEM5, GrantKind::Semaphore(4)),
            (SEM5, GrantKind::Shared),
            (GrantKind::Shared, SEM5),
            (SEM5, GrantKind::Exclusive),
            (GrantKind::Exclusive, SEM5),
        ] {
            let grants = [of(a, "k", 1, 10, 1000, 3000), of(b, "k", 2, 11, 2000, 4000)];
            let v = check(&grants, &[], true);
            assert_eq!(
                v.violations.len(),
                1,
                "{a:?} then {b:?}: {:?}",
                v.violations
            );
            assert!(
                v.violations[0].starts_with("overlap on"),
                "{:?}",
                v.violations
            );
            // One after the other, any kinds may follow each other.
            let grants = [of(a, "k", 1, 10, 1000, 2000), of(b, "k", 2, 11, 2000, 4000)];
            assert!(check(&grants, &[], true).violations.is_empty());
        }
        // Permits of one resource still need rising fencing tokens.
        let grants = [
            of(SEM5, "k", 1, 10, 1000, 3000),
            of(SEM5, "k", 2, 10, 1000, 3000),
        ];
        assert!(check(&grants, &[], true).violations[0].starts_with("fencing token"));
        // Only exclusive holders write to the fenced resource.
        let fence = FencedResource::new(true);
        assert!(fence.write("k", 0, 10));
        let v = check(&grants, &fence.writes(), true);
        assert!(
            v.violations
                .iter()
                .any(|m| m.starts_with("write 0 by a semaphore(5) grant")),
            "{:?}",
            v.violations
        );
    }
}
