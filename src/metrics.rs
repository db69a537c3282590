//! Prometheus metrics (`GET /metrics`). Names and labels are documented in
//! README "Operations"; labels are bounded (route patterns, never names or
//! tenants), so a scrape stays small whatever clients send.
//!
//! Histograms are exported with buckets (not summaries) so they aggregate
//! across pods.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets, seconds: 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of waits in line, seconds: 1 ms to the longest wait (300 s).
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of holds, seconds: 10 ms to a day.
const HOLD_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn init() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("cooplocker_wait_seconds".into()), WAIT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("cooplocker_hold_seconds".into()),
                        HOLD_BUCKETS,
                    )
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    // Histogram samples accumulate until drained: drain them
                    // every few seconds whether or not anyone scrapes.
                    let upkeep = handle.clone();
                    let _ = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || loop {
                            std::thread::sleep(std::time::Duration::from_secs(5));
                            upkeep.run_upkeep();
                        });
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// A method as a label: the standard ones by name, anything else `OTHER`
/// (a client may send any token as a method; labels must stay bounded).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

type HttpHandles = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// This worker's handles per (method, route, status): the registry is
    /// looked up once per combination, not once per request. Bounded: methods
    /// and statuses are few and routes are the route table's patterns.
    static HTTP: std::cell::RefCell<std::collections::HashMap<(&'static str, String, u16), HttpHandles>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// One HTTP request: its route pattern (`unmatched` for none), method, status
/// and duration.
pub fn http_request(method: &str, route: String, status: u16, seconds: f64) {
    let method = method_label(method);
    HTTP.with(|cell| {
        let mut map = cell.borrow_mut();
        let handles = map.entry((method, route, status)).or_insert_with_key(|(m, r, s)| {
            (
                metrics::counter!("cooplocker_http_requests_total", "method" => *m, "route" => r.clone(), "status" => s.to_string()),
                metrics::histogram!("cooplocker_http_request_duration_seconds", "method" => *m, "route" => r.clone()),
            )
        });
        handles.0.increment(1);
        handles.1.record(seconds);
    });
}

/// One store call (a Redis round trip) and how it ended.
pub fn store_call(op: &'static str, seconds: f64, error: Option<&'static str>) {
    metrics::counter!("cooplocker_store_calls_total", "op" => op).increment(1);
    metrics::histogram!("cooplocker_store_call_duration_seconds", "op" => op).record(seconds);
    if let Some(kind) = error {
        metrics::counter!("cooplocker_store_errors_total", "op" => op, "kind" => kind).increment(1);
    }
}

/// Per-item outcomes of the reservation endpoints, e.g. ("reserve", "RESERVED").
pub fn outcome(op: &'static str, result: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("cooplocker_operations_total", "op" => op, "result" => result)
            .increment(n);
    }
}

/// Expired reservations the sweeper retired (each with its `EXPIRED` event).
pub fn expired(n: u64) {
    metrics::counter!("cooplocker_reservations_expired_total").increment(n);
}

/// A request refused by a rate limit: `tenant` (its partition) or `address`
/// (public locks, JWT exchange).
pub fn rate_limited(scope: &'static str) {
    metrics::counter!("cooplocker_rate_limited_total", "scope" => scope).increment(1);
}

/// A JWT exchange and how it ended (`issued`, `rejected`, `tier_required`).
pub fn jwt_exchange(result: &'static str) {
    metrics::counter!("cooplocker_jwt_exchanges_total", "result" => result).increment(1);
}

/// Event streams connected to this instance now.
pub fn sse_clients(n: u64) {
    metrics::gauge!("cooplocker_sse_clients").set(n as f64);
}

/// How a waiting request's wait ended (contract section 19): `granted`,
/// `timed_out` (also at shutdown) or `cancelled` (its client went away).
pub fn wait_ended(outcome: &'static str, seconds: f64) {
    metrics::histogram!("cooplocker_wait_seconds", "outcome" => outcome).record(seconds);
}

static WAITERS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// A request starts (`1`) or stops (`-1`) waiting in line on this instance.
pub fn waiters(change: i64) {
    let now = WAITERS.fetch_add(change, std::sync::atomic::Ordering::SeqCst) + change;
    metrics::gauge!("cooplocker_waiters").set(now.max(0) as f64);
}

/// A request answered from its Idempotency-Key record (nothing executed).
pub fn idempotent_replay() {
    metrics::counter!("cooplocker_idempotent_replays_total").increment(1);
}

/// Fencing tokens validated, by result (`current`, `stale`).
pub fn fence_checks(result: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("cooplocker_fence_checks_total", "result" => result).increment(n);
    }
}

/// How long holds lasted when they ended, by the store clock: `released`
/// (unreserve, a locklock release), `expired` or `force_released`.
pub fn hold_ended(end: &'static str, seconds: f64) {
    metrics::histogram!("cooplocker_hold_seconds", "end" => end).record(seconds);
}
