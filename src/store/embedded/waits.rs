//! Waiting acquire in process (contract section 12), as `lua/waits.lua` does
//! it in Redis: a line per resource in ticket order (one ticket counter per
//! tenant, so multi-item waiters cannot deadlock), the waiters' records with
//! their heartbeat, and the hand-over that grants a freed resource to the head
//! of its line in the same step as the release.

use super::*;

/// A waiter's heartbeat goes stale after this long (its poller is gone).
const HEARTBEAT_MS: Millis = 15_000;
/// A waiter's record outlives its wait by this much.
const KEEP_MS: Millis = 60_000;

/// One item a waiter waits for.
#[derive(Debug, Clone)]
pub(super) struct WaitItem {
    pub resource: String,
    pub requester: String,
    pub ttl_ms: u64,
    pub token: ReleaseToken,
    /// Exclusive, shared or a semaphore permit.
    pub kind: Kind,
    /// Its expiry warning in seconds, armed by the grant.
    pub warn_s: Option<u64>,
}

#[derive(Debug, Clone)]
pub(super) struct Waiter {
    label: String,
    /// A locklock lock: the hash of its secret, if any.
    locklock: Option<Option<String>>,
    ticket: u64,
    heartbeat_ms: Millis,
    /// When it entered its lines.
    entered_ms: Millis,
    /// When the record goes.
    until_ms: Millis,
    items: Vec<WaitItem>,
    /// The grant, once made.
    granted: Option<Vec<ReserveOutcome>>,
}

/// A tenant's lines and waiters.
#[derive(Debug, Default)]
pub(super) struct Lines {
    lines: HashMap<String, BTreeMap<u64, WaiterId>>,
    waiters: HashMap<WaiterId, Waiter>,
    next_ticket: u64,
    /// Waiters granted by the operation in progress, announced when it ends.
    pub granted_now: Vec<WaiterId>,
    /// The contention counters (`lua/waits.lua` contention_count): waits,
    /// and waits that ended without a grant.
    pub waits_seen: Counter,
    pub timed_out: Counter,
}

/// A contention counter as `P cw` / `P co` of `lua/waits.lua` keep it: the
/// `CONTENTION_MAX` resources with the highest counts (the lowest goes when a
/// new one comes), all gone `CONTENTION_KEEP_MS` after the last change.
#[derive(Debug, Default)]
pub(super) struct Counter {
    counts: HashMap<String, u64>,
    changed_ms: Millis,
}

impl Counter {
    fn count(&mut self, resource: &str, now_ms: Millis) {
        if now_ms.saturating_sub(self.changed_ms) >= crate::store::CONTENTION_KEEP_MS {
            self.counts.clear();
        }
        *self.counts.entry(resource.to_string()).or_insert(0) += 1;
        if self.counts.len() > crate::store::CONTENTION_MAX {
            // ZREMRANGEBYRANK 0 0: the lowest count, the smallest name of those.
            let lowest = self
                .counts
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                .map(|(k, _)| k.clone());
            if let Some(k) = lowest {
                self.counts.remove(&k);
            }
        }
        self.changed_ms = now_ms;
    }

    /// The counts now (none once kept past their time).
    pub fn live(&self, now_ms: Millis) -> &HashMap<String, u64> {
        static NONE: std::sync::LazyLock<HashMap<String, u64>> =
            std::sync::LazyLock::new(HashMap::new);
        if now_ms.saturating_sub(self.changed_ms) >= crate::store::CONTENTION_KEEP_MS {
            &NONE
        } else {
            &self.counts
        }
    }
}

impl Lines {
    /// How many wait for `resource`.
    pub fn len_of(&self, resource: &str) -> u64 {
        self.lines.get(resource).map_or(0, |l| l.len() as u64)
    }

    /// A waiter's place (1 = next) in the line of `resource`; 0 when out of it.
    fn place(&self, resource: &str, w: &Waiter) -> u64 {
        self.lines
            .get(resource)
            .filter(|l| l.contains_key(&w.ticket))
            .map_or(0, |l| l.range(..=w.ticket).count() as u64)
    }

    fn head(&self, resource: &str) -> Option<WaiterId> {
        self.lines
            .get(resource)
            .and_then(|l| l.values().next().copied())
    }

    /// Takes a waiter out of every line (its record stays).
    fn unline(&mut self, wid: WaiterId) {
        let Some(w) = self.waiters.get(&wid) else {
            return;
        };
        for it in &w.items {
            if let Some(line) = self.lines.get_mut(&it.resource) {
                line.remove(&w.ticket);
                if line.is_empty() {
                    self.lines.remove(&it.resource);
                }
            }
        }
    }

    /// Live waiters (stale ones and expired records are forgotten here).
    pub fn live(&mut self, now_ms: Millis) -> usize {
        let stale: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, w)| {
                w.until_ms < now_ms || (w.granted.is_none() && w.heartbeat_ms < now_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for wid in stale {
            self.unline(wid);
            self.waiters.remove(&wid);
        }
        self.waiters
            .values()
            .filter(|w| w.granted.is_none())
            .count()
    }
}

impl TenantState {
    /// Puts `wid` in the line of each item until `now + wait_ms`; its places.
    pub(super) fn enter(
        &mut self,
        (wid, label, locklock): (WaiterId, &str, Option<Option<String>>),
        items: Vec<WaitItem>,
        now_ms: Millis,
        wait_ms: u64,
    ) -> Vec<u64> {
        let lines = &mut self.waits;
        lines.next_ticket += 1;
        let ticket = lines.next_ticket;
        for it in &items {
            lines
                .lines
                .entry(it.resource.clone())
                .or_default()
                .insert(ticket, wid);
            lines.waits_seen.count(&it.resource, now_ms);
        }
        let w = Waiter {
            label: label.to_string(),
            locklock,
            ticket,
            heartbeat_ms: now_ms + HEARTBEAT_MS,
            entered_ms: now_ms,
            until_ms: now_ms + wait_ms + KEEP_MS,
            items,
            granted: None,
        };
        let places = w
            .items
            .iter()
            .map(|it| lines.place(&it.resource, &w))
            .collect();
        lines.waiters.insert(wid, w);
        places
    }

    /// Grants waiter `wid` every item if it heads each line and each item
    /// can join its resource's holders (counting its own earlier items).
    fn try_grant(&mut self, wid: WaiterId, now_us: u64, retain: usize) -> bool {
        let now_ms = now_us / 1000;
        let Some(w) = self.waits.waiters.get(&wid).cloned() else {
            return false;
        };
        let mut views: HashMap<&str, View> = HashMap::new();
        let ready = w.items.iter().all(|it| {
            if self.waits.head(&it.resource) != Some(wid) {
                return false;
            }
            // In its lock delay: the waiter keeps its place (contract
            // section 17); the poll hands it over when the delay ends.
            if self.delay_until(&it.resource, now_ms).is_some() {
                return false;
            }
            let view = views
                .entry(it.resource.as_str())
                .or_insert_with(|| self.view(&it.resource, now_ms));
            if !view.can_join(it.kind) {
                return false;
            }
            view.join(it.kind, &it.requester, Some(now_ms + it.ttl_ms));
            true
        });
        if !ready {
            return false;
        }
        let rows = w
            .items
            .iter()
            .map(|it| {
                self.grant(
                    Grant {
                        resource: &it.resource,
                        requester: &it.requester,
                        ttl_ms: Some(it.ttl_ms),
                        token: it.token.clone(),
                        label: &w.label,
                        locklock: w.locklock.clone(),
                        kind: it.kind,
                        warn_s: it.warn_s,
                    },
                    now_us,
                    retain,
                )
            })
            .map(|mut row| {
                if let ReserveOutcome::Reserved { waited_ms, .. } = &mut row {
                    *waited_ms = Some(now_ms.saturating_sub(w.entered_ms));
                }
                row
            })
            .collect();
        self.waits.unline(wid);
        self.waits.granted_now.push(wid);
        if let Some(rec) = self.waits.waiters.get_mut(&wid) {
            rec.granted = Some(rows);
            rec.until_ms = now_ms + KEEP_MS;
        }
        true
    }

    /// Hands `resource` to the head of its line while the head can be
    /// granted (so consecutive shared heads, or semaphore heads while
    /// permits last, are granted together; a head that cannot join stops
    /// it: FIFO), dropping stale heads (and handing over the lines they
    /// leave). A granted waiter's other lines where it joined as shared or
    /// semaphore get a hand-over too: their next head may join it.
    pub(super) fn handover(&mut self, resource: &str, now_us: u64, retain: usize) -> bool {
        let now_ms = now_us / 1000;
        let mut granted = false;
        while let Some(head) = self.waits.head(resource) {
            let stale = self
                .waits
                .waiters
                .get(&head)
                .is_none_or(|w| w.granted.is_some() || w.heartbeat_ms < now_ms);
            if !stale {
                if !self.try_grant(head, now_us, retain) {
                    break;
                }
                granted = true;
                let mut others: Vec<String> = self
                    .waits
                    .waiters
                    .get(&head)
                    .map(|w| {
                        w.items
                            .iter()
                            .filter(|it| it.kind.is_multi() && it.resource != resource)
                            .map(|it| it.resource.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                others.dedup();
                for other in others {
                    self.handover(&other, now_us, retain);
                }
                continue;
            }
            let others: Vec<String> = self
                .waits
                .waiters
                .get(&head)
                .map(|w| w.items.iter().map(|it| it.resource.clone()).collect())
                .unwrap_or_default();
            self.waits.unline(head);
            if let Some(line) = self.waits.lines.get_mut(resource) {
                line.retain(|_, w| *w != head);
            }
            if self
                .waits
                .waiters
                .get(&head)
                .is_some_and(|w| w.granted.is_none())
            {
                self.waits.waiters.remove(&head);
            }
            for other in others.iter().filter(|r| r.as_str() != resource) {
                granted |= self.handover(other, now_us, retain);
            }
        }
        granted
    }

    /// `wait_poll`: refreshes the heartbeat, tries the hand-over of its
    /// resources, and answers where it stands.
    pub(super) fn poll(&mut self, wid: WaiterId, now_us: u64, retain: usize) -> WaitState {
        let now_ms = now_us / 1000;
        let Some(w) = self.waits.waiters.get_mut(&wid) else {
            return WaitState::Gone;
        };
        if w.granted.is_none() {
            w.heartbeat_ms = now_ms + HEARTBEAT_MS;
            let resources: Vec<String> = w.items.iter().map(|it| it.resource.clone()).collect();
            for r in resources {
                self.handover(&r, now_us, retain);
            }
        }
        match self.waits.waiters.get(&wid) {
            None => WaitState::Gone,
            Some(w) => match &w.granted {
                Some(rows) => WaitState::Granted(rows.clone()),
                None => WaitState::Waiting(
                    w.items
                        .iter()
                        .map(|it| self.waits.place(&it.resource, w))
                        .collect(),
                ),
            },
        }
    }

    /// `wait_leave`: out of every line (a grant that came first is the
    /// answer, or, when the client went away, released again), and the lines
    /// it leaves get a hand-over.
    pub(super) fn leave(
        &mut self,
        wid: WaiterId,
        went_away: bool,
        now_us: u64,
        retain: usize,
    ) -> LeaveOutcome {
        let now_ms = now_us / 1000;
        let Some(w) = self.waits.waiters.get(&wid).cloned() else {
            return LeaveOutcome::Gone;
        };
        self.waits.waiters.remove(&wid);
        let outcome = match (&w.granted, went_away) {
            (Some(rows), false) => return LeaveOutcome::Granted(rows.clone()),
            (Some(_), true) => {
                for it in &w.items {
                    let ours = self
                        .live_holds(&it.resource, now_ms)
                        .find(|l| l.token == it.token.as_str())
                        .map(|l| l.fencing);
                    if let Some(fencing) = ours {
                        if let Some(old) = self.remove_hold(&it.resource, fencing) {
                            self.emit(
                                retain,
                                now_ms,
                                EventKind::Unreserved,
                                &it.resource,
                                &old,
                                &w.label,
                            );
                        }
                    }
                }
                LeaveOutcome::Released
            }
            (None, _) => {
                let left = w
                    .items
                    .iter()
                    .map(|it| {
                        let place = self.waits.place(&it.resource, &w);
                        match self.live_holds(&it.resource, now_ms).next() {
                            Some(l) => (place, l.requester.clone(), l.expires_at),
                            None => (place, String::new(), None),
                        }
                    })
                    .collect();
                for it in &w.items {
                    if let Some(line) = self.waits.lines.get_mut(&it.resource) {
                        line.remove(&w.ticket);
                        if line.is_empty() {
                            self.waits.lines.remove(&it.resource);
                        }
                    }
                    if !went_away {
                        self.waits.timed_out.count(&it.resource, now_ms);
                    }
                }
                LeaveOutcome::Left(left)
            }
        };
        for it in &w.items {
            self.handover(&it.resource, now_us, retain);
        }
        outcome
    }
}
