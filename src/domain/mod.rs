//! Domain types: parse-don't-validate newtypes for everything a client sends,
//! and the plain data the store hands back. A value of these types has passed the
//! contract's rules (section 1), so nothing invalid can reach a store.

pub mod jwt;
pub mod policy;
mod time;

pub use policy::{LeasePolicy, PolicyRefusal};
pub use time::{format_millis, Millis};

use serde::Serialize;
use std::fmt;

/// Longest `resource` / `requester` / label, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest allowed `ttlSeconds` (one year).
pub const MAX_TTL_SECONDS: u64 = 31_536_000;

/// Why a client-supplied value was refused; becomes one `details` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the section 1 string rules: 1–256 UTF-8 bytes, no control characters.
fn check_name(value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid("must not be empty".into()));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Invalid(format!(
            "must be at most {MAX_NAME_BYTES} UTF-8 bytes (got {})",
            value.len()
        )));
    }
    if value.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
        return Err(Invalid(
            "must not contain control characters (U+0000-U+001F, U+007F)".into(),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a client-supplied string under the section 1 rules.
            pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
                let value = value.into();
                check_name(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a lockable thing inside a tenant (any string within the rules).
    Resource
);
name_type!(
    /// Who holds (or asks for) a reservation.
    Requester
);
name_type!(
    /// A human label of an API key, shown in events as `apiKeyLabel`.
    KeyLabel
);
name_type!(
    /// A tenant's display name.
    TenantName
);

/// A tenant id: a UUID (v7, so ids sort by creation time). Never contains `{` or
/// `}`, so it is safe inside a Redis Cluster hash tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        uuid::Uuid::parse_str(value)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| Invalid("is not a tenant id".into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An API key id (not the secret): `key_` + 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn generate() -> Self {
        Self(format!("key_{}", hex::encode(rand::random::<[u8; 8]>())))
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let ok = value.len() == 20
            && value.starts_with("key_")
            && value[4..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(Invalid("is not a key id".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret half of a reservation: a random UUID returned only to the holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseToken(String);

impl ReleaseToken {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The token of a UUID's 16 bytes (as a store records it).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        uuid::Uuid::from_slice(bytes)
            .ok()
            .map(|u| Self(u.hyphenated().to_string()))
    }

    /// Any 1–256 byte string is accepted (a wrong token is `INVALID_TOKEN`, not a
    /// 400), but it must obey the same string rules as names.
    pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        check_name(&value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time-to-live: 1 s to one year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(u64);

impl Ttl {
    pub fn from_seconds(seconds: u64) -> Result<Self, Invalid> {
        if (1..=MAX_TTL_SECONDS).contains(&seconds) {
            Ok(Self(seconds))
        } else {
            Err(Invalid(format!(
                "must be an integer from 1 to {MAX_TTL_SECONDS} (seconds)"
            )))
        }
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn millis(self) -> u64 {
        self.0 * 1000
    }
}

/// An expiry warning (contract section 18): `EXPIRING` this many seconds
/// before a hold's expiry. At least 1 and below the TTL it warns about, so it
/// is only built against one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarnBefore(u64);

impl WarnBefore {
    pub fn new(seconds: u64, ttl: Ttl) -> Result<Self, Invalid> {
        if (1..ttl.seconds()).contains(&seconds) {
            Ok(Self(seconds))
        } else {
            Err(Invalid(format!(
                "must be a whole number of seconds, at least 1 and below ttlSeconds ({})",
                ttl.seconds()
            )))
        }
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn millis(self) -> u64 {
        self.0 * 1000
    }
}

/// The four service tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Starter,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "free" => Ok(Self::Free),
            "starter" => Ok(Self::Starter),
            "pro" => Ok(Self::Pro),
            "enterprise" => Ok(Self::Enterprise),
            _ => Err(Invalid(
                "must be one of free, starter, pro, enterprise".into(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Starter => "starter",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// How many API keys a tenant of this tier may hold (`None`: unlimited).
    pub fn key_limit(self) -> Option<usize> {
        match self {
            Self::Free => Some(1),
            Self::Starter => Some(10),
            Self::Pro => Some(100),
            Self::Enterprise => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reservation as it is held now (never carries the release token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub resource: Resource,
    pub requester: String,
    pub reserved_at: Millis,
    pub expires_at: Option<Millis>,
    pub fencing_token: u64,
    pub api_key_label: String,
    /// What kind of hold it is (contract section 15).
    pub kind: Kind,
    /// `reservedAt + maxHoldSeconds` when the tenant's lease policy has one
    /// (contract section 17).
    pub hold_deadline: Option<Millis>,
}

/// The most permits a semaphore may have, and the most shared holders one
/// resource may have at once (contract section 15).
pub const MAX_HOLDERS: u16 = 10_000;

/// The kind of a hold (contract section 15). Exclusive and shared are the two
/// modes of one read-write lock; a semaphore admits `limit` holders that ask
/// for the same `limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    #[default]
    Exclusive,
    Shared,
    /// A semaphore of this many permits (1..=MAX_HOLDERS).
    Semaphore(u16),
}

impl Kind {
    /// The wire name of its mode: `exclusive`, `shared` or `semaphore`.
    pub fn mode(self) -> &'static str {
        match self {
            Self::Exclusive => "exclusive",
            Self::Shared => "shared",
            Self::Semaphore(_) => "semaphore",
        }
    }

    /// The semaphore's permits, `None` for the lock modes.
    pub fn limit(self) -> Option<u16> {
        match self {
            Self::Semaphore(n) => Some(n),
            _ => None,
        }
    }

    /// Whether a resource may have more than one holder of this kind.
    pub fn is_multi(self) -> bool {
        !matches!(self, Self::Exclusive)
    }

    /// The most holders of this kind one resource may have at once.
    pub fn capacity(self) -> usize {
        match self {
            Self::Exclusive => 1,
            Self::Shared => usize::from(MAX_HOLDERS),
            Self::Semaphore(n) => usize::from(n),
        }
    }

    /// The kind's code in the store's records and events (Lua and the
    /// embedded store alike): `""` exclusive, `"s"` shared, the limit in
    /// decimal for a semaphore.
    pub fn code(self) -> String {
        match self {
            Self::Exclusive => String::new(),
            Self::Shared => "s".into(),
            Self::Semaphore(n) => n.to_string(),
        }
    }

    /// The kind of a code written by [`Kind::code`]; `None` for anything else.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "" => Some(Self::Exclusive),
            "s" => Some(Self::Shared),
            n => n
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_HOLDERS).contains(n))
                .map(Self::Semaphore),
        }
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub tier: Tier,
    pub created_at: Millis,
    /// JWT verification settings, `None` when not configured.
    pub jwt: Option<jwt::JwtSettings>,
    /// The lease policy (contract section 17).
    pub policy: LeasePolicy,
}

/// What an API key may do (contract section 16): `Write` (the default, every
/// tenant route) or `Read` (check, list, validate and the event stream only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    Read,
    #[default]
    Write,
}

impl KeyScope {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            _ => Err(Invalid("must be \"read\" or \"write\"".into())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key's public metadata (never the secret, never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: KeyId,
    pub label: String,
    pub created_at: Millis,
    pub scope: KeyScope,
}

/// A newly minted secret with its metadata: returned once, then only its hash is kept.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub info: ApiKeyInfo,
    pub secret: String,
}

/// Generates an API key secret: `ck_` + 160 random bits in hex.
pub fn generate_secret() -> String {
    format!("ck_{}", hex::encode(rand::random::<[u8; 20]>()))
}

/// The only form in which a secret is stored or compared: hex SHA-256. A fast hash
/// is right here because the secrets are 160-bit random values, not passwords.
pub fn hash_secret(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A verified credential, as the authentication cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// The API key, or `None` for an exchanged token.
    pub key_id: Option<KeyId>,
    pub label: String,
    pub tier: Tier,
    /// For an exchanged token: the JWT's `sub`, the only requester it may
    /// reserve as.
    pub subject: Option<String>,
    /// What the credential may do; exchanged tokens are `Write`.
    pub scope: KeyScope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_section_one() {
        assert!(Resource::parse("a").is_ok());
        assert!(Resource::parse("x".repeat(256)).is_ok());
        assert!(Resource::parse("é".repeat(129)).is_err());
        assert!(Resource::parse("").is_err());
        assert!(Resource::parse("a\nb").is_err());
        assert!(Resource::parse("a\u{7f}").is_err());
        assert!(Resource::parse("{tenant}*?[x]").is_ok());
    }

    #[test]
    fn ttl_bounds() {
        assert!(Ttl::from_seconds(0).is_err());
        assert!(Ttl::from_seconds(1).is_ok());
        assert!(Ttl::from_seconds(MAX_TTL_SECONDS).is_ok());
        assert!(Ttl::from_seconds(MAX_TTL_SECONDS + 1).is_err());
        let ttl = Ttl::from_seconds(10).unwrap();
        assert!(WarnBefore::new(0, ttl).is_err());
        assert!(WarnBefore::new(1, ttl).is_ok());
        assert!(WarnBefore::new(9, ttl).is_ok());
        assert!(WarnBefore::new(10, ttl).is_err());
        assert!(WarnBefore::new(1, Ttl::from_seconds(1).unwrap()).is_err());
    }

    #[test]
    fn ids_parse_round_trip() {
        let t = TenantId::generate();
        assert_eq!(TenantId::parse(t.as_str()).ok(), Some(t));
        let k = KeyId::generate();
        assert_eq!(KeyId::parse(k.as_str()).ok(), Some(k));
        assert!(KeyId::parse("key_zz").is_err());
    }
}
