//! The recorded history of a fault run and the checker over it.
//!
//! Everything the checker judges comes from what clients were told (fencing
//! tokens, `reservedAt` and `expiresAt` from the store's clock) and from what
//! the fenced test resource saw, never from the service's own logs. The store
//! clock (Redis `TIME`) and the harness clock are the same host clock here, so
//! a client's send time can bound when its release took effect.

use std::collections::HashMap;
use std::sync::Mutex;

/// One grant a client was told about: one RESERVED item of a reserve answer
/// (a batch of k items is one call and up to k grants, each with its own
/// fencing token and expiry).
#[derive(Debug, Clone)]
pub struct Grant {
    pub resource: String,
    pub client: usize,
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
/// 1. no two grants of one resource overlap (a grant starts no earlier than
///    every earlier grant's end);
/// 2. fencing tokens of one resource never repeat and rise with grant order;
/// 3. every stale write (one made after a newer grant of the resource wrote)
///    is rejected, and, on a fenced resource, no fresh write is.
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
        // 1. Overlaps: compare with the latest end among all earlier grants.
        let mut latest: Option<usize> = None;
        for &i in ids.iter() {
            let g = &grants[i];
            if let Some(p) = latest {
                let prev = &grants[p];
                if g.start_ms < prev.end_ms() {
                    v.violations.push(format!(
                        "overlap on {resource:?}: client {} was granted it at {} (token {}) while \
                         client {} held it from {} until {} (token {})",
                        g.client,
                        g.start_ms,
                        g.token,
                        prev.client,
                        prev.start_ms,
                        prev.end_ms(),
                        prev.token
                    ));
                }
            }
            if latest.is_none_or(|p| g.end_ms() > grants[p].end_ms()) {
                latest = Some(i);
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
}
