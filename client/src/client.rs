//! [`Client`]: one typed method per endpoint of the tenant API, over one
//! request path that sends the API key, gives every write an
//! `Idempotency-Key` (the same on each of its retries), and retries what the
//! service asks to be retried (`503`, `429`, and `409 IDEMPOTENCY_KEY_IN_USE`)
//! or what never got an answer, with capped exponential back-off and jitter,
//! honouring `Retry-After`, within [`RetryPolicy`]'s bounds.

use crate::error::{ApiError, Error, ErrorBody, ErrorCode};
use crate::events::{EventFilter, EventStream};
use crate::lease::LeaseBuilder;
use crate::types::{
    BatchAnswer, BatchOptions, ExtendItem, FenceResult, FenceResults, ItemResult, ListQuery,
    ReleaseItem, Reservation, ReservationPage, ReserveItem, ValidateItem,
};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often and how long a call is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// No retry starts later than this after the first attempt.
    pub max_elapsed: Duration,
    /// The first back-off; it doubles with every attempt ...
    pub base_delay: Duration,
    /// ... up to this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause before attempt `attempt + 1`: at least the server's
    /// `Retry-After` when it gave one (plus up to `base_delay` of jitter, so
    /// many clients told the same second do not come back together), else
    /// "equal jitter" over the capped exponential back-off.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        match retry_after {
            Some(wait) => wait + self.base_delay.mul_f64(rng.random::<f64>()),
            None => {
                let exp = self
                    .base_delay
                    .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
                    .min(self.max_delay);
                exp / 2 + (exp / 2).mul_f64(rng.random::<f64>())
            }
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
}

impl ClientBuilder {
    /// Retries of every call (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Longest wait for one answer (default 10 s); a waiting reserve gets its
    /// `waitSeconds` on top. Event streams have no overall timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = self.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::InvalidArgument(format!("server URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidArgument(format!(
                "server URL {base:?}: must start with http:// or https://"
            )));
        }
        if self.api_key.is_empty() {
            return Err(Error::InvalidArgument("the API key is empty".into()));
        }
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                api_key: self.api_key,
                retry: self.retry,
                timeout: self.timeout,
            }),
        })
    }
}

/// reqwest is built with rustls and no crypto provider of its own (the
/// server picks aws-lc-rs); an application that picked none gets aws-lc-rs.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one first, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// A handle on one cooplocker service for one API key. Cheap to clone (the
/// connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) api_key: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

/// One logical call: sent once, and again on each retry, unchanged.
struct Call<'a> {
    method: Method,
    path: &'a str,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    idempotency_key: Option<String>,
    /// On top of the client's timeout (a waiting reserve's wait).
    extra_time: Duration,
}

impl Client {
    /// A client with the default settings; see [`Client::builder`].
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url, api_key).build()
    }

    /// `base_url` is the service's root (`http://127.0.0.1:8080`), `api_key`
    /// the tenant's key or an exchanged token.
    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: api_key.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("cooplocker-client/", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// The service's root URL, as configured.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// `POST /api/v1/Reservation/reserve`: one result per item, in order.
    pub async fn reserve(&self, items: &[ReserveItem]) -> Result<BatchAnswer, Error> {
        self.reserve_with(items, &BatchOptions::default()).await
    }

    /// [`reserve`](Self::reserve) with `atomic`, `waitSeconds` or a chosen
    /// `Idempotency-Key`.
    pub async fn reserve_with(
        &self,
        items: &[ReserveItem],
        options: &BatchOptions,
    ) -> Result<BatchAnswer, Error> {
        self.write("/api/v1/Reservation/reserve", items, options)
            .await
    }

    /// `POST /api/v1/Reservation/unreserve`.
    pub async fn unreserve(&self, items: &[ReleaseItem]) -> Result<BatchAnswer, Error> {
        self.unreserve_with(items, &BatchOptions::default()).await
    }

    pub async fn unreserve_with(
        &self,
        items: &[ReleaseItem],
        options: &BatchOptions,
    ) -> Result<BatchAnswer, Error> {
        self.write("/api/v1/Reservation/unreserve", items, options)
            .await
    }

    /// `POST /api/v1/Reservation/extend` (a lease heartbeat).
    pub async fn extend(&self, items: &[ExtendItem]) -> Result<BatchAnswer, Error> {
        self.extend_with(items, &BatchOptions::default()).await
    }

    pub async fn extend_with(
        &self,
        items: &[ExtendItem],
        options: &BatchOptions,
    ) -> Result<BatchAnswer, Error> {
        self.write("/api/v1/Reservation/extend", items, options)
            .await
    }

    /// `POST /api/v1/Reservation/check`: `HELD` or `FREE` per resource.
    pub async fn check<S: AsRef<str>>(&self, resources: &[S]) -> Result<Vec<ItemResult>, Error> {
        let items: Vec<_> = resources
            .iter()
            .map(|r| serde_json::json!({"resource": r.as_ref()}))
            .collect();
        let (answer, _) = self
            .call::<BatchAnswer>(Call {
                method: Method::POST,
                path: "/api/v1/Reservation/check",
                query: Vec::new(),
                body: Some(to_body(&items)?),
                idempotency_key: None,
                extra_time: Duration::ZERO,
            })
            .await?;
        Ok(answer.results)
    }

    /// `POST /api/v1/Reservation/validate`: whether each fencing token is
    /// the one an active hold has now.
    pub async fn validate(&self, items: &[ValidateItem]) -> Result<Vec<FenceResult>, Error> {
        let (answer, _) = self
            .call::<FenceResults>(Call {
                method: Method::POST,
                path: "/api/v1/Reservation/validate",
                query: Vec::new(),
                body: Some(to_body(items)?),
                idempotency_key: None,
                extra_time: Duration::ZERO,
            })
            .await?;
        Ok(answer.results)
    }

    /// `GET /api/v1/Reservation`: one page of the active reservations,
    /// sorted by resource.
    pub async fn list(&self, query: &ListQuery) -> Result<ReservationPage, Error> {
        let (page, _) = self
            .call::<ReservationPage>(Call {
                method: Method::GET,
                path: "/api/v1/Reservation",
                query: query.pairs(),
                body: None,
                idempotency_key: None,
                extra_time: Duration::ZERO,
            })
            .await?;
        Ok(page)
    }

    /// Every page of [`list`](Self::list), following `nextCursor` (at most
    /// `max_pages` pages, so a listing that keeps growing still ends).
    pub async fn list_all(
        &self,
        mut query: ListQuery,
        max_pages: usize,
    ) -> Result<Vec<Reservation>, Error> {
        let mut out = Vec::new();
        for _ in 0..max_pages {
            let page = self.list(&query).await?;
            out.extend(page.reservations);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// `GET /api/v1/events`: the tenant's events as a [`Stream`](futures_util::Stream)
    /// that reconnects by itself and resumes with `Last-Event-ID`.
    pub fn events(&self, filter: EventFilter) -> EventStream {
        EventStream::open(self.clone(), filter)
    }

    /// A [`Lease`](crate::Lease) on `resource`: acquire, renew in the
    /// background, release.
    pub fn lease(&self, resource: impl Into<String>) -> LeaseBuilder {
        LeaseBuilder::new(self.clone(), resource.into())
    }

    async fn write<T: Serialize>(
        &self,
        path: &'static str,
        items: &[T],
        options: &BatchOptions,
    ) -> Result<BatchAnswer, Error> {
        let mut query = Vec::new();
        if options.atomic {
            query.push(("atomic", "true".to_string()));
        }
        if options.wait_seconds > 0 {
            query.push(("waitSeconds", options.wait_seconds.to_string()));
        }
        let key = options
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (mut answer, headers) = self
            .call::<BatchAnswer>(Call {
                method: Method::POST,
                path,
                query,
                body: Some(to_body(items)?),
                idempotency_key: Some(key),
                extra_time: Duration::from_secs(options.wait_seconds),
            })
            .await?;
        answer.replayed = headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(answer)
    }

    /// Sends `call` until it succeeds, fails for good, or the retry policy
    /// says stop; answers the last outcome.
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<(T, HeaderMap), Error> {
        let policy = &self.inner.retry;
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.once::<T>(&call).await;
            let retry_after = match &outcome {
                Ok(_) => return outcome,
                Err(Error::Api(e)) if retryable(e) => e.retry_after,
                // Reads are safe to repeat, writes carry their Idempotency-Key.
                Err(Error::Transport(_)) => None,
                Err(_) => return outcome,
            };
            if attempt >= policy.max_attempts.max(1) {
                return outcome;
            }
            let pause = policy.delay(attempt, retry_after);
            if start.elapsed() + pause > policy.max_elapsed {
                return outcome;
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn once<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<(T, HeaderMap), Error> {
        let inner = &self.inner;
        let mut req = inner
            .http
            .request(call.method.clone(), format!("{}{}", inner.base, call.path))
            .timeout(inner.timeout + call.extra_time)
            .header("X-Api-Key", &inner.api_key)
            .header("Accept", "application/json");
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if let Some(key) = &call.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = &call.body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let res = req.send().await.map_err(transport)?;
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Error::Api(api_error(status, &headers, &bytes)));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            status: status.as_u16(),
            message: format!("{e}: {}", excerpt(&bytes)),
        })?;
        Ok((value, headers))
    }
}

fn to_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(format!("request body: {e}")))
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_builder() {
        Error::InvalidArgument(e.to_string())
    } else {
        Error::Transport(e)
    }
}

/// What the service (or a gateway in front of it) says is worth another try.
fn retryable(e: &ApiError) -> bool {
    matches!(e.status, 429 | 502 | 503 | 504) || e.code == ErrorCode::IdempotencyKeyInUse
}

/// `Retry-After` in seconds (the service never sends the date form).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub(crate) fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let retry_after = retry_after(headers);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError {
            status: status.as_u16(),
            code: ErrorCode::parse(&b.error.code),
            message: b.error.message,
            details: b.error.details,
            retry_after,
        },
        // Not the service's shape: a proxy or load balancer answered.
        Err(_) => ApiError {
            status: status.as_u16(),
            code: ErrorCode::Other(format!("HTTP_{}", status.as_u16())),
            message: excerpt(body),
            details: Vec::new(),
            retry_after,
        },
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_the_cap_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let exp = (p.base_delay * (1 << (attempt - 1))).min(p.max_delay);
            let d = p.delay(attempt, None);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
        let d = p.delay(1, Some(Duration::from_secs(2)));
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(2) + p.base_delay);
    }

    #[test]
    fn a_foreign_error_body_keeps_its_status() {
        let e = api_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>\n bad gateway </html>",
        );
        assert_eq!(e.status, 502);
        assert_eq!(e.message, "<html> bad gateway </html>");
        assert!(retryable(&e));
    }
}
