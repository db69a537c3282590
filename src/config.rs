//! Configuration: one [`Settings`] struct, every field a flag and an environment
//! variable (contract section 11), validated before anything starts. A bad value
//! stops the start with one line naming the setting.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Write requests per second per tier (reads get five times as many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub free: u32,
    pub starter: u32,
    pub pro: u32,
    pub enterprise: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            free: 10,
            starter: 50,
            pro: 200,
            enterprise: 1000,
        }
    }
}

impl RateLimits {
    /// Write requests per second of a tier.
    pub fn writes(&self, tier: crate::domain::Tier) -> u32 {
        use crate::domain::Tier;
        match tier {
            Tier::Free => self.free,
            Tier::Starter => self.starter,
            Tier::Pro => self.pro,
            Tier::Enterprise => self.enterprise,
        }
    }
}

fn parse_rate_limits(raw: &str) -> Result<RateLimits, String> {
    parse_per_tier(raw, RateLimits::default())
}

/// Most Idempotency-Key records a tenant keeps, per tier.
pub const IDEMPOTENCY_RECORDS: RateLimits = RateLimits {
    free: 1_000,
    starter: 10_000,
    pro: 100_000,
    enterprise: 1_000_000,
};

fn parse_idempotency_records(raw: &str) -> Result<RateLimits, String> {
    parse_per_tier(raw, IDEMPOTENCY_RECORDS)
}

/// `tier=number,...` over `defaults` (numbers from 1 to 1000000).
fn parse_per_tier(raw: &str, defaults: RateLimits) -> Result<RateLimits, String> {
    let mut limits = defaults;
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tier, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not tier=number"))?;
        let n: u32 = value
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| format!("{value:?} is not a number from 1 to 1000000"))?;
        match tier.trim() {
            "free" => limits.free = n,
            "starter" => limits.starter = n,
            "pro" => limits.pro = n,
            "enterprise" => limits.enterprise = n,
            other => {
                return Err(format!(
                    "{other:?} is not a tier (free, starter, pro, enterprise)"
                ))
            }
        }
    }
    Ok(limits)
}

fn parse_secs(raw: &str) -> Result<Duration, String> {
    let s = raw.trim().trim_end_matches('s');
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=3600).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is not a number of seconds from 1 to 3600"))
}

fn parse_session_secs(raw: &str) -> Result<Duration, String> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (60..=604_800).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is not a number of seconds from 60 to 604800"))
}

fn parse_redis_url(raw: &str) -> Result<String, String> {
    crate::store::topology::parse(raw).map(|_| raw.to_string())
}

fn parse_token(raw: &str) -> Result<String, String> {
    if raw.len() < 16 {
        Err("must be at least 16 characters".into())
    } else if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain spaces or control characters".into())
    } else {
        Ok(raw.to_string())
    }
}

/// The keys that sign exchanged tokens: comma-separated, each at least 32
/// characters; the first signs, all verify.
fn parse_token_secrets(raw: &str) -> Result<TokenSecrets, String> {
    let keys: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err("must name at least one key".into());
    }
    if keys.iter().any(|k| k.len() < 32) {
        return Err("each key must be at least 32 characters".into());
    }
    Ok(TokenSecrets(keys))
}

/// Keys for exchanged tokens (never printed: `Debug` hides them).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecrets(pub Vec<String>);

impl std::fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSecrets({} keys)", self.0.len())
    }
}

fn range<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |raw: &str| {
        raw.trim()
            .parse::<T>()
            .ok()
            .filter(|v| *v >= lo && *v <= hi)
            .ok_or_else(|| format!("must be a number from {lo} to {hi}"))
    }
}

/// Every setting of the server (and the admin CLI's connection to it).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(
        long,
        env = "COOPLOCKER_LISTEN",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Redis URL; unset runs the embedded single-instance store.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url, global = true, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Token for the admin API (Authorization: Bearer). Embedded mode generates
    /// and prints one when unset; fleet mode disables the admin API when unset.
    #[arg(long, env = "COOPLOCKER_ADMIN_TOKEN", value_parser = parse_token, global = true, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Keys that sign tokens exchanged for JWTs, comma-separated (each at least
    /// 32 characters): the first signs, all verify, so a key is rotated by
    /// putting the new one first and dropping the old after one token lifetime.
    /// Unset: a random key is created once in Redis and shared by the fleet (in
    /// embedded mode: per process).
    #[arg(long, env = "COOPLOCKER_TOKEN_SECRET", value_parser = parse_token_secrets,
          global = true, hide_env_values = true)]
    pub token_secret: Option<TokenSecrets>,

    /// Lifetime of a token exchanged for a JWT, in seconds (never beyond the
    /// JWT's own exp).
    #[arg(long, env = "COOPLOCKER_TOKEN_TTL", value_parser = range(60u64, 86_400),
          default_value = "900", global = true)]
    pub token_ttl: u64,

    /// JWT exchanges per second from one client address (burst the same),
    /// fleet-wide; valid or not, each counts.
    #[arg(long, env = "COOPLOCKER_TOKEN_EXCHANGE_PER_IP", value_parser = range(1u32, 100_000),
          default_value = "20", global = true)]
    pub token_exchange_per_ip: u32,

    /// Log format.
    #[arg(
        long,
        env = "COOPLOCKER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Write requests per second per tier, e.g. free=10,starter=50,pro=200,enterprise=1000.
    #[arg(long, env = "COOPLOCKER_RATE_LIMITS", value_parser = parse_rate_limits,
          default_value = "free=10,starter=50,pro=200,enterprise=1000", global = true)]
    pub rate_limits: RateLimits,

    /// How long the record of an Idempotency-Key is kept, in seconds: a repeat
    /// within it gets the first answer.
    #[arg(long, env = "COOPLOCKER_IDEMPOTENCY_TTL", value_parser = range(60u64, 86_400),
          default_value = "3600", global = true)]
    pub idempotency_ttl: u64,

    /// Most Idempotency-Key records a tenant keeps, per tier (the oldest go
    /// first), e.g. free=1000,starter=10000,pro=100000,enterprise=1000000.
    #[arg(long, env = "COOPLOCKER_IDEMPOTENCY_RECORDS", value_parser = parse_idempotency_records,
          default_value = "free=1000,starter=10000,pro=100000,enterprise=1000000", global = true)]
    pub idempotency_records: RateLimits,

    /// Events kept per tenant for Last-Event-ID resume.
    #[arg(long, env = "COOPLOCKER_EVENTS_RETAIN", value_parser = range(100u64, 10_000_000),
          default_value = "10000", global = true)]
    pub events_retain: u64,

    /// Serve keyless public locklock locks.
    #[arg(long, env = "COOPLOCKER_PUBLIC_LOCKS", default_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub public_locks: bool,

    /// Keyless locklock requests per second from one client address (burst the
    /// same), fleet-wide.
    #[arg(long, env = "COOPLOCKER_PUBLIC_LOCKS_PER_IP", value_parser = range(1u32, 100_000),
          default_value = "10", global = true)]
    pub public_locks_per_ip: u32,

    /// Most public locklock locks held at once (all clients together).
    #[arg(long, env = "COOPLOCKER_PUBLIC_LOCKS_MAX", value_parser = range(1usize, 100_000_000),
          default_value = "100000", global = true)]
    pub public_locks_max: usize,

    /// Most public locklock locks one client address (an IPv6 client: its /64)
    /// may hold at once.
    #[arg(long, env = "COOPLOCKER_PUBLIC_LOCKS_PER_ADDRESS", value_parser = range(1usize, 1_000_000),
          default_value = "100", global = true)]
    pub public_locks_per_address: usize,

    /// Longest `expires_in` of a public locklock lock, and its default, in
    /// seconds (a keyed lock's default stays 30 days).
    #[arg(long, env = "COOPLOCKER_PUBLIC_MAX_EXPIRES_IN", value_parser = range(1u64, 2_592_000),
          default_value = "86400", global = true)]
    pub public_max_expires_in: u64,

    /// Same as `COOPLOCKER_TRUSTED_PROXIES=1` (kept for existing set-ups): the
    /// client address is the last `X-Forwarded-For` entry, the one the proxy
    /// in front wrote.
    #[arg(long, env = "COOPLOCKER_TRUST_FORWARDED_FOR", default_value = "false",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub trust_forwarded_for: bool,

    /// Proxies in front of the instance that each append the address they got
    /// the request from to `X-Forwarded-For`: the client address is the N-th
    /// entry from the right. 0: the peer address (no proxy is trusted).
    #[arg(long, env = "COOPLOCKER_TRUSTED_PROXIES", value_parser = range(0u32, 16),
          default_value = "0", global = true)]
    pub trusted_proxies: u32,

    /// Failed authentications (unknown, revoked or expired keys and tokens)
    /// per second from one client address, per instance (burst the same); past
    /// it such requests get 429 RATE_LIMITED without a store look-up.
    #[arg(long, env = "COOPLOCKER_AUTH_FAILURES_PER_IP", value_parser = range(1u32, 100_000),
          default_value = "10", global = true)]
    pub auth_failures_per_ip: u32,

    /// Most items in one batch request.
    #[arg(long, env = "COOPLOCKER_MAX_BATCH", value_parser = range(1usize, 100_000),
          default_value = "1000", global = true)]
    pub max_batch: usize,

    /// Largest request body in bytes.
    #[arg(long, env = "COOPLOCKER_MAX_BODY_BYTES", value_parser = range(1024usize, 64 << 20),
          default_value = "1048576", global = true)]
    pub max_body_bytes: usize,

    /// Upper bound on a graceful shutdown, in seconds.
    #[arg(long, env = "COOPLOCKER_SHUTDOWN_TIMEOUT", value_parser = parse_secs,
          default_value = "10", global = true)]
    pub shutdown_timeout: Duration,

    /// A request body that has not fully arrived this long (ms) after the
    /// request's headers is answered 408 REQUEST_TIMEOUT and its connection
    /// closed, so a client that never finishes cannot hold a connection.
    #[arg(long, env = "COOPLOCKER_BODY_TIMEOUT_MS", value_parser = range(100u64, 600_000),
          default_value = "10000", global = true)]
    pub body_timeout_ms: u64,

    /// A store call that takes longer (ms) is answered 503 STORE_UNAVAILABLE.
    #[arg(long, env = "COOPLOCKER_STORE_TIMEOUT_MS", value_parser = range(50u64, 30_000),
          default_value = "800", global = true)]
    pub store_timeout_ms: u64,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "COOPLOCKER_WORKERS", value_parser = range(1usize, 256), global = true)]
    pub workers: Option<usize>,

    /// Most event-stream (SSE) connections one tenant may hold on one instance;
    /// past it a new stream is answered 429.
    #[arg(long, env = "COOPLOCKER_SSE_MAX_PER_TENANT", value_parser = range(1usize, 1_000_000),
          default_value = "1000", global = true)]
    pub sse_max_per_tenant: usize,

    /// Events buffered per stream client; a client that falls this far behind is
    /// disconnected (it resumes with Last-Event-ID).
    #[arg(long, env = "COOPLOCKER_SSE_BUFFER", value_parser = range(16usize, 1_000_000),
          default_value = "1024", global = true)]
    pub sse_buffer: usize,

    /// Milliseconds between `: keep-alive` comments on an idle event stream.
    #[arg(long, env = "COOPLOCKER_SSE_KEEPALIVE_MS", value_parser = range(100u64, 15_000),
          default_value = "15000", global = true)]
    pub sse_keepalive_ms: u64,

    /// Embedded mode only: the default tenant's API key, instead of a random one.
    #[arg(long, env = "COOPLOCKER_DEFAULT_API_KEY", value_parser = parse_token, global = true, hide_env_values = true)]
    pub default_api_key: Option<String>,

    /// Dashboard sign-in: the OpenID Connect provider's issuer URL (its
    /// discovery document is `<issuer>/.well-known/openid-configuration`), e.g.
    /// `https://accounts.google.com`. Unset: no OIDC sign-in.
    #[arg(long, env = "COOPLOCKER_OIDC_ISSUER", global = true)]
    pub oidc_issuer: Option<String>,

    /// The dashboard's OAuth client id at the OIDC provider.
    #[arg(long, env = "COOPLOCKER_OIDC_CLIENT_ID", global = true)]
    pub oidc_client_id: Option<String>,

    /// The dashboard's OAuth client secret at the OIDC provider.
    #[arg(
        long,
        env = "COOPLOCKER_OIDC_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub oidc_client_secret: Option<String>,

    /// The URL users reach the service at (e.g. `https://locks.example.com`);
    /// the OIDC redirect URI is `<it>/dashboard/callback`. Unset: taken from
    /// each request's Host.
    #[arg(long, env = "COOPLOCKER_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Mark dashboard cookies `Secure` (sent over HTTPS only). Turn off only for
    /// plain-HTTP local use.
    #[arg(long, env = "COOPLOCKER_COOKIE_SECURE", default_value = "true",
          action = clap::ArgAction::Set, global = true)]
    pub cookie_secure: bool,

    /// How long a dashboard session lasts, in seconds.
    #[arg(long, env = "COOPLOCKER_SESSION_TTL", value_parser = parse_session_secs,
          default_value = "28800", global = true)]
    pub session_ttl: Duration,
}

impl Settings {
    /// Proxies whose `X-Forwarded-For` entries are trusted (see
    /// `trusted_proxies`; `trust_forwarded_for` counts as one).
    pub fn forwarded_hops(&self) -> u32 {
        self.trusted_proxies
            .max(u32::from(self.trust_forwarded_for))
    }

    /// Settings for tests and embedding: every default, embedded mode, port 0.
    pub fn for_tests() -> Self {
        use clap::Parser;
        /// The settings alone: the command line without its subcommands.
        #[derive(Parser)]
        #[command(name = "cooplocker")]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        Only::parse_from(["cooplocker", "--listen", "127.0.0.1:0"]).settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse() {
        let l = parse_rate_limits("free=5, pro=300").expect("valid");
        assert_eq!((l.free, l.starter, l.pro, l.enterprise), (5, 50, 300, 1000));
        assert!(parse_rate_limits("gold=5").is_err());
        assert!(parse_rate_limits("free=0").is_err());
        assert!(parse_rate_limits("free").is_err());
    }

    #[test]
    fn redis_urls() {
        assert!(parse_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_redis_url("http://x").is_err());
    }
}
