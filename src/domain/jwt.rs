//! A tenant's JWT verification settings (contract section 2), as the admin API
//! sets them and the store keeps them. Everything that could make verification
//! unsafe is refused here, once, rather than at every exchange: the algorithms
//! are pinned and must fit the key (no HS/RS confusion, never `none`), an HMAC
//! secret must be at least 256 bits, a JWKS is fetched only from the one URL
//! configured.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Longest issuer or audience.
const MAX_CLAIM_BYTES: usize = 1024;
/// An HMAC key shorter than the hash output is weak (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
const MAX_HS256_SECRET_BYTES: usize = 1024;
const MAX_PEM_BYTES: usize = 16 * 1024;
const MAX_URL_BYTES: usize = 2048;

/// The algorithms a tenant may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum JwtAlg {
    HS256,
    RS256,
    ES256,
}

impl JwtAlg {
    pub const ALL: [JwtAlg; 3] = [JwtAlg::HS256, JwtAlg::RS256, JwtAlg::ES256];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

/// A tenant's JWT settings. Exactly one key source is set (checked by
/// [`JwtSettings::parse`]; stored settings were parsed on the way in). Its
/// schema is that of the admin API's `jwt` object (what `parse` reads); the
/// admin API shows it back as `http::wire::JwtView`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSettings {
    #[schema(min_length = 1, max_length = 1024)]
    pub issuer: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub audience: String,
    /// HS256, RS256, ES256 (each at most once); by default what the key allows.
    #[schema(required = false, min_items = 1, max_items = 3)]
    pub algorithms: Vec<JwtAlg>,
    /// Raw text, 32 to 1024 bytes. Exactly one of hs256Secret, publicKeyPem,
    /// jwksUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 32, max_length = 1024, nullable = false)]
    pub hs256_secret: Option<String>,
    /// An RSA or EC public key in PEM (at most 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 16384, nullable = false)]
    pub public_key_pem: Option<String>,
    /// An https URL (http only on loopback), at most 2048 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri", max_length = 2048, nullable = false)]
    pub jwks_url: Option<String>,
}

/// The fields of the admin API's `jwt` object.
pub const FIELDS: [&str; 6] = [
    "issuer",
    "audience",
    "algorithms",
    "hs256Secret",
    "publicKeyPem",
    "jwksUrl",
];

/// A problem with one field of the `jwt` object: (field, problem).
pub type Problem = (&'static str, String);

fn claim_text(field: &'static str, v: Option<Value>, problems: &mut Vec<Problem>) -> String {
    match v {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_CLAIM_BYTES
                && !s.chars().any(|c| c.is_control()) =>
        {
            s
        }
        Some(Value::String(_)) => {
            problems.push((
                field,
                format!("must be 1 to {MAX_CLAIM_BYTES} bytes without control characters"),
            ));
            String::new()
        }
        None | Some(Value::Null) => {
            problems.push((field, "is required".into()));
            String::new()
        }
        Some(_) => {
            problems.push((field, "must be a string".into()));
            String::new()
        }
    }
}

fn opt_text(field: &'static str, v: Option<Value>, problems: &mut Vec<Problem>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            problems.push((field, "must be a string".into()));
            None
        }
    }
}

/// Whether a JWKS URL's host is this machine (plain `http` is allowed only there,
/// for development and tests).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The kind of a public key in PEM, from what it parses as. A private key is
/// refused (it would parse, but has no business being stored here).
fn pem_alg(pem: &str) -> Option<JwtAlg> {
    if pem.contains("PRIVATE KEY") || !pem.contains("PUBLIC KEY-----") {
        return None;
    }
    if DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() {
        Some(JwtAlg::RS256)
    } else if DecodingKey::from_ec_pem(pem.as_bytes()).is_ok() {
        Some(JwtAlg::ES256)
    } else {
        None
    }
}

impl JwtSettings {
    /// Parses and checks the admin API's `jwt` object (its fields, already
    /// checked for unknown and repeated names, in `fields`).
    pub fn parse(mut fields: Vec<(String, Value)>) -> Result<Self, Vec<Problem>> {
        let mut take = |name: &str| {
            fields
                .iter()
                .position(|(k, _)| k == name)
                .map(|i| fields.swap_remove(i).1)
        };
        let mut problems = Vec::new();
        let issuer = claim_text("issuer", take("issuer"), &mut problems);
        let audience = claim_text("audience", take("audience"), &mut problems);
        let algorithms = match take("algorithms") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= JwtAlg::ALL.len() => {
                let mut algs = Vec::new();
                for item in items {
                    match item.as_str().and_then(JwtAlg::parse) {
                        Some(a) if !algs.contains(&a) => algs.push(a),
                        Some(a) => problems.push((
                            "algorithms",
                            format!("names {} more than once", a.as_str()),
                        )),
                        None => problems.push((
                            "algorithms",
                            format!(
                                "may only contain \"HS256\", \"RS256\" and \"ES256\" (got {item}); \"none\" is never accepted"
                            ),
                        )),
                    }
                }
                Some(algs)
            }
            Some(_) => {
                problems.push((
                    "algorithms",
                    "must be a non-empty array of \"HS256\", \"RS256\", \"ES256\"".into(),
                ));
                None
            }
        };
        let secret = opt_text("hs256Secret", take("hs256Secret"), &mut problems);
        let pem = opt_text("publicKeyPem", take("publicKeyPem"), &mut problems);
        let jwks = opt_text("jwksUrl", take("jwksUrl"), &mut problems);

        let sources = [secret.is_some(), pem.is_some(), jwks.is_some()];
        let allowed: Vec<JwtAlg> = match sources.iter().filter(|s| **s).count() {
            1 => {
                if let Some(s) = &secret {
                    if s.len() < MIN_HS256_SECRET_BYTES || s.len() > MAX_HS256_SECRET_BYTES {
                        problems.push((
                            "hs256Secret",
                            format!(
                                "must be {MIN_HS256_SECRET_BYTES} to {MAX_HS256_SECRET_BYTES} bytes (an HS256 key shorter than 256 bits is weak)"
                            ),
                        ));
                    }
                    vec![JwtAlg::HS256]
                } else if let Some(p) = &pem {
                    match (p.len() <= MAX_PEM_BYTES).then(|| pem_alg(p)).flatten() {
                        Some(a) => vec![a],
                        None => {
                            problems.push((
                                "publicKeyPem",
                                "must be an RSA or EC (P-256) public key in PEM (-----BEGIN PUBLIC KEY-----)".into(),
                            ));
                            Vec::new()
                        }
                    }
                } else {
                    let raw = jwks.as_deref().unwrap_or_default();
                    match reqwest::Url::parse(raw) {
                        Ok(u)
                            if raw.len() <= MAX_URL_BYTES
                                && u.username().is_empty()
                                && u.password().is_none()
                                && (u.scheme() == "https"
                                    || (u.scheme() == "http" && is_loopback(&u))) => {}
                        _ => problems.push((
                            "jwksUrl",
                            format!(
                                "must be an https:// URL of at most {MAX_URL_BYTES} bytes without credentials (http:// only for localhost)"
                            ),
                        )),
                    }
                    vec![JwtAlg::RS256, JwtAlg::ES256]
                }
            }
            _ => {
                problems.push((
                    "hs256Secret",
                    "exactly one of hs256Secret, publicKeyPem and jwksUrl must be set".into(),
                ));
                Vec::new()
            }
        };
        let algorithms = algorithms.unwrap_or_else(|| allowed.clone());
        if !allowed.is_empty() {
            if let Some(bad) = algorithms.iter().find(|a| !allowed.contains(a)) {
                let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                problems.push((
                    "algorithms",
                    format!(
                        "{} does not fit this key; it allows {}",
                        bad.as_str(),
                        names.join(", ")
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            issuer,
            audience,
            algorithms,
            hs256_secret: secret,
            public_key_pem: pem,
            jwks_url: jwks,
        })
    }

    /// A short digest of the settings. Exchanged tokens carry the digest of the
    /// settings that verified their JWT, so changing or removing the settings
    /// revokes every token exchanged under the old ones.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        super::hash_secret(&text)[..16].to_string()
    }
}
