//! Reading script replies into domain values, and telling the store's
//! conditions (unreachable, loading, out of memory, failing over) from bugs.

use crate::domain::{Holding, Kind, Millis, PolicyRefusal, Resource};
use crate::store::{Caller, Metered, RateDecision, StoreError, StoreResult};
use redis::Value;

/// Redis I/O failures, timeouts and the store's own conditions — loading,
/// failover, a read-only replica, cluster redirection or resharding, out of
/// memory, a busy script — mean the store is unavailable now (`503`, and it
/// recovers by itself); anything else is a bug.
pub fn classify(what: &str, e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind as S};
    /// Codes of the store's conditions that are not a `ServerErrorKind`.
    const CONDITIONS: &[&str] = &[
        "OOM",
        "BUSY",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "UNBLOCKED",
    ];
    let text = e.to_string();
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.code().is_some_and(|c| CONDITIONS.contains(&c))
        // A command refused inside a script comes back as the script's error.
        || text.contains("OOM command not allowed")
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    S::BusyLoading
                        | S::TryAgain
                        | S::ClusterDown
                        | S::MasterDown
                        | S::ReadOnly
                        | S::Moved
                        | S::Ask
                )
        );
    if transient {
        StoreError::Unavailable(format!("{what}: {text}"))
    } else {
        StoreError::Internal(format!("{what}: {text}"))
    }
}

/// The parts of a metered script's reply (see `lua/meter.lua`): the
/// limiter's decision for a limit of `limit` per second, and when the request
/// ran, the reply and how it was answered (0 ran, 1 repeat, 2 key reused, 3
/// key in use by a waiting request).
fn split(reply: Value, limit: impl FnOnce(bool) -> u32) -> StoreResult<(RateDecision, Value, i64)> {
    let mut parts = items(reply)?.into_iter();
    let (flag, a, b) = (parts.next(), parts.next(), parts.next());
    let num = |v: &Option<Value>| {
        v.as_ref()
            .and_then(as_u64)
            .ok_or_else(|| bad_reply("meter"))
    };
    match flag {
        Some(Value::Int(1)) => {
            let body = parts.next().unwrap_or(Value::Nil);
            let how = match parts.next() {
                Some(Value::Int(h @ 0..=3)) => h,
                _ => return Err(bad_reply("meter")),
            };
            if let Some(ended) = parts.next() {
                holds_ended(&ended);
            }
            let decision = RateDecision {
                allowed: true,
                limit: limit(how == 1),
                remaining: num(&a)?,
                retry_after_ms: 0,
                reset_ms: num(&b)?,
            };
            Ok((decision, body, how))
        }
        Some(Value::Int(0)) => {
            let decision = RateDecision {
                allowed: false,
                limit: limit(false),
                remaining: 0,
                retry_after_ms: num(&a)?,
                reset_ms: num(&b)?,
            };
            Ok((decision, Value::Nil, 0))
        }
        _ => Err(bad_reply("meter")),
    }
}

/// Records the holds a script ended (`ended` of `lua/clock.lua`: pairs of
/// how it ended and its age in ms) in `cooplocker_hold_seconds`.
pub fn holds_ended(ended: &Value) {
    let Value::Array(pairs) = ended else { return };
    for pair in pairs.chunks_exact(2) {
        let end = match pair[0] {
            Value::Int(1) => "released",
            Value::Int(2) => "expired",
            Value::Int(3) => "force_released",
            _ => continue,
        };
        if let Some(ms) = as_u64(&pair[1]) {
            crate::metrics::hold_ended(end, ms as f64 / 1000.0);
        }
    }
}

/// The limiter's decision in the reply of a script that only meters
/// (`rate_limit`).
pub fn decision(reply: Value, limit: u32) -> StoreResult<RateDecision> {
    Ok(split(reply, |_| limit)?.0)
}

/// Splits a metered script's reply (see `lua/meter.lua`) into the body's reply
/// (or, for a repeat of a recorded Idempotency-Key, the recorded one) and the
/// rate limiter's decision; a refused request is `StoreError::RateLimited`, a
/// key used for another request `StoreError::IdempotencyKeyReused`.
pub fn metered(reply: Value, caller: &Caller) -> StoreResult<Metered<Value>> {
    // A repeat counts against the replay quota (the tenant's reads).
    let quota_of = |replayed: bool| match (&caller.idempotency, replayed) {
        (Some(idem), true) => idem.replay_quota.as_ref(),
        _ => caller.quota.as_ref(),
    };
    let (decision, body, how) = split(reply, |replayed| {
        quota_of(replayed).map_or(0, |q| q.per_second)
    })?;
    let replayed = how == 1;
    let rate = match quota_of(replayed) {
        Some(_) => Some(decision.checked()?),
        None => None,
    };
    match how {
        2 => return Err(StoreError::IdempotencyKeyReused),
        3 => return Err(StoreError::IdempotencyKeyInUse),
        _ => {}
    }
    Ok(Metered {
        value: body,
        rate,
        replayed,
    })
}

pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A time in ms, or `None` for the scripts' -1 ("no expiry").
pub fn as_opt_millis(v: &Value) -> Option<Millis> {
    match v {
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        _ => None,
    }
}

pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

pub fn items(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(StoreError::Internal(format!(
            "expected an array from a script, got {other:?}"
        ))),
    }
}

pub fn bad_reply(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected reply shape from {what}"))
}

/// A hold as check.lua and list.lua return it:
/// requester, reservedAt, expiresAt or -1, fencingToken, label, the kind
/// code (`Kind::code`; left out: exclusive) and the holdDeadline (left out:
/// none).
pub fn holding(resource: Resource, parts: &[Value]) -> Option<Holding> {
    Some(Holding {
        resource,
        requester: as_string(parts.first()?)?,
        reserved_at: as_u64(parts.get(1)?)?,
        expires_at: as_opt_millis(parts.get(2)?),
        fencing_token: as_u64(parts.get(3)?)?,
        api_key_label: parts.get(4).and_then(as_string).unwrap_or_default(),
        kind: match parts.get(5) {
            Some(kc) => Kind::from_code(&as_string(kc)?)?,
            None => Kind::Exclusive,
        },
        hold_deadline: parts.get(6).and_then(as_opt_millis),
    })
}

/// A lease-policy refusal (`{-5, item, why, limit}` of reserve.lua and
/// extend.lua), if the reply is one.
pub fn refusal(reply: &Value) -> Option<PolicyRefusal> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [Value::Int(-5), item, why, limit] = parts.as_slice() else {
        return None;
    };
    let index = as_u64(item)?.saturating_sub(1) as usize;
    let max_seconds = as_u64(limit).unwrap_or(0);
    Some(match as_u64(why)? {
        1 => PolicyRefusal::TtlAboveMax { index, max_seconds },
        2 => PolicyRefusal::TtlRequired { index },
        _ => PolicyRefusal::WaitAboveMax { max_seconds },
    })
}
