//! Building and running one instance: pick the store from the configuration,
//! bind the listener (port 0 in tests), start the background sweeper, and hold
//! the route table.

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::domain::{hash_secret, TenantName, Tier};
use crate::fanout::hub::{Hub, HubConfig};
use crate::http::connection::Conn;
use crate::http::{self, error::ApiError};
use crate::state::{AppState, Limits};
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::{Accounts, Store};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::from_fn;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App, HttpRequest};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What an embedded start created, so it can be shown to the user (and tests).
#[derive(Debug, Clone)]
pub struct EmbeddedBootstrap {
    pub tenant_id: String,
    pub api_key: String,
    /// Set when the admin token was generated rather than configured.
    pub generated_admin_token: Option<String>,
}

pub struct Application {
    port: u16,
    server: Server,
    pub bootstrap: Option<EmbeddedBootstrap>,
    sweeper: tokio::task::JoinHandle<()>,
    hub: Arc<Hub>,
    shutting_down: Arc<AtomicBool>,
    closing_connections: Arc<AtomicBool>,
    /// Turns true on SIGTERM once the listener is closed: connections drain.
    draining: watch::Sender<bool>,
    /// Where this instance listens (to see when the listener has closed).
    listen: std::net::SocketAddr,
    /// Dropped last, once every request has finished.
    store: Arc<dyn Store>,
}

/// Idle time after which a keep-alive connection is closed: longer than the
/// 60 s a proxy keeps idle upstream connections by default (nginx's
/// `keepalive_timeout`), so the proxy closes first and never sends a request
/// on a connection this side is closing.
const KEEP_ALIVE: Duration = Duration::from_secs(75);
/// Longest wait on SIGTERM for the listener to close before draining starts.
const LISTENER_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// A request head must arrive within this long of the connection opening.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How often each instance sweeps expired reservations.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path().chars().take(200).collect::<String>()
    )))
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let mut admin_token = settings.admin_token.clone();
        let mut bootstrap = None;
        let store: Arc<dyn Store> = match &settings.redis_url {
            Some(url) => Arc::new(
                RedisStore::connect(RedisOptions {
                    url: url.clone(),
                    op_timeout: Duration::from_millis(settings.store_timeout_ms),
                    events_retain: settings.events_retain,
                })
                .await?,
            ),
            None => {
                let retain = usize::try_from(settings.events_retain).unwrap_or(usize::MAX);
                let store = EmbeddedStore::with_retain(retain);
                let name = TenantName::parse("default").map_err(|e| anyhow::anyhow!(e.0))?;
                let (tenant, key) = store
                    .create_tenant(&name, Tier::Enterprise, settings.default_api_key.clone())
                    .await?;
                let generated = if admin_token.is_none() {
                    let t = format!("adm_{}", hex::encode(rand::random::<[u8; 20]>()));
                    admin_token = Some(t.clone());
                    Some(t)
                } else {
                    None
                };
                bootstrap = Some(EmbeddedBootstrap {
                    tenant_id: tenant.id.to_string(),
                    api_key: key.secret,
                    generated_admin_token: generated,
                });
                Arc::new(store)
            }
        };
        if admin_token.is_none() {
            tracing::warn!("COOPLOCKER_ADMIN_TOKEN is not set: the admin API is disabled");
        }

        crate::tokens::init_crypto().map_err(|e| anyhow::anyhow!("start-up self-test: {e}"))?;
        let auth = Authenticator::start(
            store.clone(),
            settings
                .token_secret
                .as_ref()
                .map(|k| k.0.clone())
                .unwrap_or_default(),
        );
        let hub = Hub::start(
            store.clone(),
            HubConfig {
                max_per_tenant: settings.sse_max_per_tenant,
                buffer: settings.sse_buffer,
            },
        );
        let shutting_down = Arc::new(AtomicBool::new(false));
        let closing_connections = Arc::new(AtomicBool::new(false));
        let oidc = match (
            &settings.oidc_issuer,
            &settings.oidc_client_id,
            &settings.oidc_client_secret,
        ) {
            (Some(i), Some(c), Some(s)) => Some(Arc::new(crate::dashboard::oidc::Provider::new(i, c, s)?)),
            (None, None, None) => None,
            _ => anyhow::bail!(
                "dashboard sign-in needs all three of COOPLOCKER_OIDC_ISSUER, COOPLOCKER_OIDC_CLIENT_ID and COOPLOCKER_OIDC_CLIENT_SECRET"
            ),
        };
        let local_tenant = match (&bootstrap, &oidc) {
            (Some(b), None) => crate::domain::TenantId::parse(&b.tenant_id).ok(),
            _ => None,
        };
        let dashboard = web::Data::new(crate::dashboard::Dashboard {
            oidc,
            public_url: settings.public_url.clone(),
            cookie_secure: settings.cookie_secure,
            session_ttl: settings.session_ttl,
            local_tenant,
        });
        let state = web::Data::new(AppState {
            store: store.clone(),
            accounts: crate::accounts::Accounts::new(store.clone(), auth.clone()),
            auth,
            admin_token_hash: admin_token.as_deref().map(hash_secret),
            limits: Limits {
                max_batch: settings.max_batch,
                max_body_bytes: settings.max_body_bytes,
                public_locks: settings.public_locks,
                public_locks_per_ip: settings.public_locks_per_ip,
                public_locks_max: settings.public_locks_max,
                public_locks_per_address: settings.public_locks_per_address,
                public_max_expires_in: settings.public_max_expires_in,
                trusted_proxies: settings.forwarded_hops(),
                token_exchange_per_ip: settings.token_exchange_per_ip,
                auth_failures_per_ip: settings.auth_failures_per_ip,
                body_timeout: Duration::from_millis(settings.body_timeout_ms),
                idempotency_ttl: Duration::from_secs(settings.idempotency_ttl),
                idempotency_records: settings.idempotency_records,
            },
            rates: settings.rate_limits,
            shutting_down: shutting_down.clone(),
            closing_connections: closing_connections.clone(),
            hub: hub.clone(),
            sse_keepalive: Duration::from_millis(settings.sse_keepalive_ms),
            public_tenant_ready: AtomicBool::new(false),
            auth_failures: http::client_addr::AuthFailures::new(settings.auth_failures_per_ip),
            verifier: crate::tokens::Verifier::new(),
            token_ttl: Duration::from_secs(settings.token_ttl),
            metrics: crate::metrics::init(),
        });

        let store_handle = store.clone();
        let sweeper = tokio::spawn(run_sweeper(store));

        let listener = TcpListener::bind(settings.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let max_body = settings.max_body_bytes;
        let (draining, drain_rx) = watch::channel(false);
        let workers = settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // The HTTP server is put together here rather than with actix-web's
        // HttpServer so that each connection runs over `http::connection::Conn`
        // (JSON answers to heads the library refuses; draining without closing
        // idle connections under a proxy) and without the library's own
        // graceful-shutdown signal, which would close idle keep-alive
        // connections at once.
        let server = actix_server::Server::build()
            .workers(workers)
            .shutdown_timeout(settings.shutdown_timeout.as_secs())
            // SIGTERM/SIGINT are handled in `run_until_stopped`, which closes
            // the event streams first so a graceful stop does not wait for them.
            .disable_signals()
            .listen("cooplocker", listener, move || {
                let state = state.clone();
                let dashboard = dashboard.clone();
                let drain_rx = drain_rx.clone();
                let app = App::new()
                    .app_data(state)
                    .app_data(web::PayloadConfig::new(max_body))
                    .wrap(from_fn(http::middleware::front_door))
                    .configure(http::routes)
                    .configure(crate::dashboard::routes(dashboard))
                    .default_service(web::to(not_found));
                let app = app
                    .into_factory()
                    .map_err(|err: actix_web::Error| err.error_response());
                let h1 = actix_http::HttpService::build()
                    .keep_alive(KEEP_ALIVE)
                    .client_request_timeout(HEAD_TIMEOUT)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .on_connect_ext(|conn: &Conn, ext| {
                        use std::os::fd::AsRawFd;
                        ext.insert(http::events::ConnFd(conn.socket().as_raw_fd()));
                    })
                    .h1(map_config(app, |_| AppConfig::default()));
                fn_service(move |io: TcpStream| {
                    let drain_rx = drain_rx.clone();
                    async move {
                        let peer = io.peer_addr().ok();
                        Ok::<_, actix_http::error::DispatchError>((Conn::new(io, drain_rx), peer))
                    }
                })
                .and_then(h1)
            })?
            .run();
        Ok(Self {
            port,
            server,
            bootstrap,
            sweeper,
            hub,
            shutting_down,
            closing_connections,
            draining,
            listen: SocketAddr::new(settings.listen.ip(), port),
            store: store_handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped or the process gets SIGTERM/SIGINT.
    /// On a signal: readiness turns false, event streams end (clients resume
    /// elsewhere with `Last-Event-ID`), then in-flight requests finish within
    /// the shutdown timeout.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let hub = self.hub.clone();
        let shutting_down = self.shutting_down.clone();
        let closing_connections = self.closing_connections.clone();
        let draining = self.draining;
        let listen = self.listen;
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing event streams, finishing requests");
            shutting_down.store(true, Ordering::SeqCst);
            hub.shut_down();
            // Stop accepting first; only once the listener is closed do
            // answers say `Connection: close`. Otherwise a proxy replaces each
            // closed connection with a new one that lands in the closing
            // listener's queue and is reset with its request unanswered.
            let stopped = handle.stop(true);
            wait_until_refused(listen).await;
            closing_connections.store(true, Ordering::SeqCst);
            draining.send_replace(true);
            stopped.await;
        });
        let result = self.server.await;
        signals.abort();
        self.sweeper.abort();
        // Every worker has stopped: no request can still need the store.
        drop(self.store);
        result
    }
}

/// Resolves once nothing listens on `addr` any more (a connection attempt is
/// refused), or after [`LISTENER_CLOSE_WAIT`] in any case.
async fn wait_until_refused(addr: SocketAddr) {
    let probe = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let deadline = tokio::time::Instant::now() + LISTENER_CLOSE_WAIT;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_millis(50),
            tokio::net::TcpStream::connect(probe),
        )
        .await
        {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    tracing::debug!("the listener did not close in time; draining anyway");
}

/// Resolves on the first SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; stop the server another way");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run_sweeper(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                crate::metrics::expired(n as u64);
                tracing::debug!(retired = n, "expired reservations retired");
            }
            Err(e) => tracing::debug!(error = %e, "sweep failed; will retry"),
        }
    }
}
