//! Every Redis key and channel name the service uses, in one place (layout
//! [`LAYOUT`]). A tenant's keys share the prefix `c:{<tag>}:`, where the tag is
//! 11 characters derived from the tenant id ([`tag`]): short, because it is
//! part of every hold's key, and a Redis Cluster hash tag, so all of a tenant's
//! keys live in one slot and each script runs on one node. What each key holds
//! is described in `lua/holds.lua`, `lua/pages.lua` and `docs/architecture.md`.

use crate::domain::TenantId;
use crate::store::{AddressLimit, Quota};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The version of the data layout below. An instance refuses a Redis that
/// holds another one (`c:layout`; layout 1, before this one, had no such key
/// and is recognised by its `cl:tenants` registry).
pub const LAYOUT: u32 = 2;
/// Where the layout version is recorded.
pub const LAYOUT_KEY: &str = "c:layout";
/// A key only layout 1 had.
pub const LAYOUT_1_MARK: &str = "cl:tenants";

/// Tenant ids, for the admin listing and the slow reconcile (zset, score 0).
pub const TENANTS: &str = "c:tenants";
/// The fleet's due index: tenant id -> the earliest second one of its holds
/// expires in (zset). Only tenants with holds that have a TTL are in it.
pub const DUE: &str = "c:due";
/// Short lease that lets one instance of the fleet sweep per round.
pub const SWEEP_LEASE: &str = "c:sweep-lease";
/// The fleet's generated key for signing exchanged tokens.
pub const TOKEN_SECRET: &str = "c:token-secret";
/// Channel of cache invalidations (payload: a tenant id, or anything else for
/// "forget everything").
pub const AUTH_CHANNEL: &str = "c:auth";
/// Grants to waiting requests (`lua/waits.lua`): "<tenant id> <waiter id>".
pub const GRANTS_CHANNEL: &str = "c:grants";

/// The tenant's short tag: the first 8 bytes of SHA-256 of its id, base64url.
/// 64 bits, so two tenants of a fleet sharing one is not to be expected; tenant
/// creation checks anyway and draws another id if it happens.
pub fn tag(t: &TenantId) -> String {
    let digest = Sha256::digest(t.as_str().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..8])
}

/// The prefix of every key of a tenant: `c:{<tag>}:`. Compute it once per
/// request and hand it to the builders below.
pub fn prefix(t: &TenantId) -> String {
    format!("c:{{{}}}:", tag(t))
}

/// The tenant record (hash: id name tier createdAt jwt hw n). Scripts derive
/// the prefix of the tenant's other keys from this key's name.
pub fn tenant(p: &str) -> String {
    format!("{p}t")
}

/// The tenant's API keys (hash keyId -> JSON record with the secret's hash).
pub fn api_keys(p: &str) -> String {
    format!("{p}k")
}

/// The tenant's event stream; its live channel has the same name.
pub fn events(p: &str) -> String {
    format!("{p}ev")
}

/// The contention counters (`lua/waits.lua` contention_count): waits, and
/// waits that ended without a grant.
pub fn contention(p: &str) -> (String, String) {
    (format!("{p}cw"), format!("{p}co"))
}

/// One hold of a resource.
pub fn hold(p: &str, resource: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(p.len() + 2 + resource.len());
    k.extend_from_slice(p.as_bytes());
    k.extend_from_slice(b"h:");
    k.extend_from_slice(resource.as_bytes());
    k
}

/// Everything of a tenant, as a `SCAN MATCH` pattern (the tag is base64url, so
/// it holds no glob character).
pub fn all_of(p: &str) -> String {
    format!("{p}*")
}

/// A rate-limit partition's GCRA state (`{tenantId}:{tier}:{read|write}` of
/// the contract), beside the tenant's other keys so the scripts count and act
/// in one step.
/// An Idempotency-Key record of the tenant (idem.lua).
pub fn idempotency_record(p: &str, record: &str) -> String {
    format!("{p}ik:{record}")
}

/// The tenant's Idempotency-Key records, oldest first (idem.lua).
pub fn idempotency_index(p: &str) -> String {
    format!("{p}ik!")
}

pub fn quota(p: &str, q: &Quota) -> String {
    format!("{p}rl:{}:{}", q.tier.as_str(), q.access.as_str())
}

/// A per-address limit's GCRA state.
pub fn address_limit(limit: AddressLimit<'_>) -> String {
    match limit {
        AddressLimit::PublicLocks(addr) => format!("c:ip:{addr}"),
        AddressLimit::TokenExchange(addr) => format!("c:ip-jwt:{addr}"),
    }
}

/// The API key lookup: SHA-256 of the secret -> `<tenant id> <key id>`.
pub fn key_hash(hash: &str) -> String {
    format!("c:apikey:{hash}")
}

/// Set of the tenants whose JWT settings name an issuer.
pub fn issuer(issuer: &str) -> String {
    format!("c:jwt-iss:{}", crate::domain::hash_secret(issuer))
}

/// The tenant whose event channel this is, by its prefix: channels are named
/// like the stream, `c:{<tag>}:ev`; the subscriber maps tags back to the
/// tenants it follows.
pub fn tag_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("c:{")?.strip_suffix("}:ev")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_prefix_is_short_and_one_hash_tag() {
        let t = TenantId::parse("0190f5e2-7c4a-7b3e-9d1a-2f4b6c8d0e1f").expect("id");
        let p = prefix(&t);
        assert_eq!(p.len(), "c:{".len() + 11 + "}:".len());
        assert_eq!(tag_of_channel(&events(&p)), Some(tag(&t).as_str()));
        assert_eq!(hold(&p, "a/b"), format!("{p}h:a/b").into_bytes());
        assert!(!tag(&t).contains(['{', '}', '*', '?', '[']));
    }
}
