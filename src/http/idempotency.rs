//! The `Idempotency-Key` header (contract section 14): parsed strictly, and
//! turned into what the store records — a record id scoped to the tenant, the
//! credential, the route and the key's value, and a fingerprint of the request
//! (method, path, query, body). The store does the rest in the operation's
//! own atomic step (`lua/idem.lua`); a repeat is answered with the first
//! answer and `Idempotent-Replayed: true`.

use super::error::ApiError;
use super::extract::quota;
use crate::domain::Tier;
use crate::state::AppState;
use crate::store::{Access, Idempotency};
use actix_web::{HttpRequest, HttpResponseBuilder};
use base64::Engine;
use sha2::{Digest, Sha256};

pub const HEADER: &str = "idempotency-key";
/// The header on an answer that is a repeat's.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// The longest key.
pub const MAX_KEY_BYTES: usize = 255;

/// The request's key, if it has one: 1 to 255 printable ASCII characters, once.
pub fn key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(HEADER);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be sent once (it appeared several times)",
        ));
    }
    let bytes = first.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_BYTES
        || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_BYTES} printable ASCII characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What the store records for `key`: `credential` names who sends it (`key:<id>`,
/// `jwt:<sub>` or `public:<address>`), `route` the operation.
pub fn record(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    (credential, route): (&str, &str),
    tier: Option<Tier>,
    body: &[u8],
) -> Idempotency {
    let id = Sha256::new()
        .chain_update(credential)
        .chain_update([0])
        .chain_update(route)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let fingerprint = Sha256::new()
        .chain_update(req.method().as_str())
        .chain_update([0])
        .chain_update(req.uri().path())
        .chain_update([0])
        .chain_update(req.query_string())
        .chain_update([0])
        .chain_update(body)
        .finalize();
    let limits = &state.limits;
    Idempotency {
        record: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id[..16]),
        fingerprint: hex::encode(&fingerprint[..16]),
        retain_ms: limits.idempotency_ttl.as_millis() as u64,
        max_records: tier.map_or(limits.idempotency_records.free, |t| {
            limits.idempotency_records.writes(t)
        }) as usize,
        replay_quota: tier.map(|t| quota(&state.rates, t, Access::Read)),
    }
}

/// Marks a repeat's answer.
pub fn mark(res: &mut HttpResponseBuilder, replayed: bool) {
    if replayed {
        crate::metrics::idempotent_replay();
        res.insert_header((REPLAYED, "true"));
    }
}

impl<S> super::extract::TenantCaller<S> {
    /// Who sends an Idempotency-Key, in its scope: the API key, or the JWT's
    /// subject of an exchanged token.
    pub fn credential(&self) -> String {
        match (&self.principal.key_id, &self.principal.subject) {
            (Some(id), _) => format!("key:{id}"),
            (None, Some(sub)) => format!("jwt:{sub}"),
            (None, None) => "token".into(),
        }
    }
}

/// The store's caller for a write of `who` on `route`, with the request's
/// Idempotency-Key when it has one.
pub fn write_caller(
    req: &HttpRequest,
    state: &AppState,
    who: &super::extract::WriteCaller,
    route: &str,
    body: &[u8],
) -> Result<crate::store::Caller, ApiError> {
    let mut caller = who.caller.clone();
    if let Some(k) = key(req)? {
        caller.idempotency = Some(record(
            req,
            state,
            &k,
            (&who.credential(), route),
            Some(who.principal.tier),
            body,
        ));
    }
    Ok(caller)
}
