//! A tenant's lease policy (contract section 17): limits on how long a
//! client may hold, and how a resource recovers when a holder is lost. Both
//! stores apply it in the same atomic step as the request it limits (the Redis
//! scripts read it from the tenant's hash), so a change applies fleet-wide from
//! the next request.

use super::MAX_TTL_SECONDS;
use serde::Serialize;
use serde_json::Value;

/// The longest lock delay (seconds).
pub const MAX_LOCK_DELAY_SECONDS: u64 = 60;
/// The bounds of `maxWaitSeconds`, and its default.
pub const MAX_WAIT_SECONDS: u64 = 300;
pub const DEFAULT_MAX_WAIT_SECONDS: u64 = 60;

/// The fields of a policy object, as the admin API spells them.
pub const FIELDS: &[&str] = &[
    "maxTtlSeconds",
    "requireTtl",
    "maxHoldSeconds",
    "lockDelaySeconds",
    "maxWaitSeconds",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeasePolicy {
    /// The largest `ttlSeconds` (and locklock `expires_in`) a request may
    /// ask; null: none.
    #[schema(required = true, minimum = 1, maximum = 31536000)]
    pub max_ttl_seconds: Option<u64>,
    /// Whether every reserve item needs a `ttlSeconds`.
    pub require_ttl: bool,
    /// No hold lasts past `reservedAt + maxHoldSeconds` (its `holdDeadline`);
    /// null: none.
    #[schema(required = true, minimum = 1, maximum = 31536000)]
    pub max_hold_seconds: Option<u64>,
    /// After `EXPIRED` or `FORCE_RELEASED` the resource takes no new holder
    /// for this long (0: none).
    #[schema(minimum = 0, maximum = 60)]
    pub lock_delay_seconds: u64,
    /// The longest `waitSeconds` a request may ask.
    #[schema(minimum = 1, maximum = 300)]
    pub max_wait_seconds: u64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            max_ttl_seconds: None,
            require_ttl: false,
            max_hold_seconds: None,
            lock_delay_seconds: 0,
            max_wait_seconds: DEFAULT_MAX_WAIT_SECONDS,
        }
    }
}

/// Why a policy refused a request; nothing was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRefusal {
    /// Item `index` (0-based) asked a TTL above `maxTtlSeconds` (the limit).
    TtlAboveMax { index: usize, max_seconds: u64 },
    /// Item `index` has no `ttlSeconds` and the tenant requires one.
    TtlRequired { index: usize },
    /// The request asked to wait longer than `maxWaitSeconds` (the limit).
    WaitAboveMax { max_seconds: u64 },
}

/// A change to a policy: the fields given, each already checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyPatch {
    pub max_ttl_seconds: Option<Option<u64>>,
    pub require_ttl: Option<bool>,
    pub max_hold_seconds: Option<Option<u64>>,
    pub lock_delay_seconds: Option<u64>,
    pub max_wait_seconds: Option<u64>,
}

impl PolicyPatch {
    /// Reads a policy object's fields (each at most once, the caller checked
    /// names and repeats): every problem as (field, problem).
    pub fn parse(fields: Vec<(String, Value)>) -> Result<Self, Vec<(String, String)>> {
        let mut patch = Self::default();
        let mut problems = Vec::new();
        for (name, value) in fields {
            let bad = |what: String| (name.clone(), what);
            match name.as_str() {
                "maxTtlSeconds" => match seconds_or_null(&value, 1, MAX_TTL_SECONDS) {
                    Ok(v) => patch.max_ttl_seconds = Some(v),
                    Err(e) => problems.push(bad(e)),
                },
                "maxHoldSeconds" => match seconds_or_null(&value, 1, MAX_TTL_SECONDS) {
                    Ok(v) => patch.max_hold_seconds = Some(v),
                    Err(e) => problems.push(bad(e)),
                },
                "requireTtl" => match value {
                    Value::Bool(b) => patch.require_ttl = Some(b),
                    _ => problems.push(bad("must be true or false".into())),
                },
                "lockDelaySeconds" => match seconds(&value, 0, MAX_LOCK_DELAY_SECONDS) {
                    Ok(v) => patch.lock_delay_seconds = Some(v),
                    Err(e) => problems.push(bad(e)),
                },
                "maxWaitSeconds" => match seconds(&value, 1, MAX_WAIT_SECONDS) {
                    Ok(v) => patch.max_wait_seconds = Some(v),
                    Err(e) => problems.push(bad(e)),
                },
                _ => problems.push(bad(format!(
                    "unknown field; allowed: {}",
                    FIELDS.join(", ")
                ))),
            }
        }
        if problems.is_empty() {
            Ok(patch)
        } else {
            Err(problems)
        }
    }

    /// The patch that puts every field back to its default (`"policy": null`).
    pub fn reset() -> Self {
        let d = LeasePolicy::default();
        Self {
            max_ttl_seconds: Some(d.max_ttl_seconds),
            require_ttl: Some(d.require_ttl),
            max_hold_seconds: Some(d.max_hold_seconds),
            lock_delay_seconds: Some(d.lock_delay_seconds),
            max_wait_seconds: Some(d.max_wait_seconds),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn apply(&self, p: &mut LeasePolicy) {
        if let Some(v) = self.max_ttl_seconds {
            p.max_ttl_seconds = v;
        }
        if let Some(v) = self.require_ttl {
            p.require_ttl = v;
        }
        if let Some(v) = self.max_hold_seconds {
            p.max_hold_seconds = v;
        }
        if let Some(v) = self.lock_delay_seconds {
            p.lock_delay_seconds = v;
        }
        if let Some(v) = self.max_wait_seconds {
            p.max_wait_seconds = v;
        }
    }
}

fn seconds(v: &Value, min: u64, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(s) if (min..=max).contains(&s) => Ok(s),
        _ => Err(format!("must be an integer from {min} to {max} (seconds)")),
    }
}

fn seconds_or_null(v: &Value, min: u64, max: u64) -> Result<Option<u64>, String> {
    if v.is_null() {
        return Ok(None);
    }
    seconds(v, min, max)
        .map(Some)
        .map_err(|e| format!("{e}, or null for none"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PolicyPatch, Vec<(String, String)>> {
        let Value::Object(m) = v else {
            panic!("an object")
        };
        PolicyPatch::parse(m.into_iter().collect())
    }

    #[test]
    fn fields_are_checked_and_applied() {
        let patch = parse(
            json!({"maxTtlSeconds": 30, "requireTtl": true, "maxHoldSeconds": null,
            "lockDelaySeconds": 0, "maxWaitSeconds": 300}),
        )
        .expect("valid");
        let mut p = LeasePolicy {
            max_hold_seconds: Some(5),
            ..LeasePolicy::default()
        };
        patch.apply(&mut p);
        assert_eq!(
            p,
            LeasePolicy {
                max_ttl_seconds: Some(30),
                require_ttl: true,
                max_hold_seconds: None,
                lock_delay_seconds: 0,
                max_wait_seconds: 300,
            }
        );
        for bad in [
            json!({"maxTtlSeconds": 0}),
            json!({"maxTtlSeconds": "30"}),
            json!({"maxHoldSeconds": 31536001}),
            json!({"requireTtl": 1}),
            json!({"lockDelaySeconds": 61}),
            json!({"lockDelaySeconds": -1}),
            json!({"lockDelaySeconds": null}),
            json!({"maxWaitSeconds": 0}),
            json!({"maxWaitSeconds": 1.5}),
            json!({"maxWait": 10}),
        ] {
            let problems = parse(bad.clone()).expect_err("refused");
            assert_eq!(problems.len(), 1, "{bad}");
        }
        assert!(parse(json!({})).expect("empty").is_empty());
        let mut p = LeasePolicy {
            lock_delay_seconds: 9,
            ..LeasePolicy::default()
        };
        PolicyPatch::reset().apply(&mut p);
        assert_eq!(p, LeasePolicy::default());
    }
}
