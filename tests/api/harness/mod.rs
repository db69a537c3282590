//! The reliability harness (`bash scripts/harness.sh`; a short run is part of
//! the test command): fault injection with a history checker, hostile input,
//! parser properties, tenant isolation and secrets at rest and in logs.

mod faults;
pub(crate) mod history;
mod hostile;
mod isolation;
mod properties;
pub(crate) mod proxy;

use faults::{run, FaultKind, RunConfig};

/// Three instances, a durable Redis, every kind of fault: mutual exclusion
/// and fencing hold, Redis outages are answered 503, nothing else fails, and
/// everything works again after healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_run_keeps_mutual_exclusion_and_fencing() {
    let out = run(RunConfig::from_env("faults", 60)).await;
    assert!(
        out.verdict.violations.is_empty(),
        "the checker found violations:\n{}",
        out.report
    );
    assert!(
        out.verdict.grants >= 20,
        "too little happened:\n{}",
        out.report
    );
    assert_eq!(out.other_5xx, 0, "5xx other than 503:\n{}", out.report);
    assert!(out.final_ok, "final operations failed:\n{}", out.report);
    assert!(
        out.panics.is_empty(),
        "an instance panicked:\n{}",
        out.report
    );
    assert!(
        out.client_failures.is_empty(),
        "a client failed:\n{}",
        out.report
    );
    for kind in FaultKind::ALL {
        assert!(
            out.kinds_seen.contains(&kind),
            "fault {kind:?} never ran:\n{}",
            out.report
        );
    }
}

/// Proof that the checker can fail on a real run: the same clients writing to
/// an unfenced resource while instances are paused longer than the TTL get
/// stale writes through, and the checker says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfenced_run_under_pauses_is_flagged() {
    let mut cfg = RunConfig::from_env("unfenced", 30);
    cfg.duration = cfg.duration.min(std::time::Duration::from_secs(30));
    cfg.fenced = false;
    cfg.faults = vec![FaultKind::PauseInstance];
    let out = run(cfg).await;
    assert!(
        out.client_failures.is_empty(),
        "a client failed:\n{}",
        out.report
    );
    assert!(
        !out.verdict.violations.is_empty(),
        "an unfenced run under pauses was not flagged:\n{}",
        out.report
    );
    assert!(
        out.verdict
            .violations
            .iter()
            .all(|v| v.starts_with("stale write accepted")),
        "only stale writes may be flagged (grants still never overlap):\n{}",
        out.report
    );
}
