//! Building and running one instance: pick the store from the configuration,
//! bind the listener (port 0 in tests), start the background sweeper, and hold
//! the route table.

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::domain::{hash_secret, TenantName, Tier};
use crate::http::{self, error::ApiError, AppState, Limits};
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::Store;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpServer};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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
}

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
                })
                .await?,
            ),
            None => {
                let store = EmbeddedStore::new();
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

        let auth = Authenticator::start(store.clone());
        let state = web::Data::new(AppState {
            store: store.clone(),
            auth,
            admin_token_hash: admin_token.as_deref().map(hash_secret),
            limits: Limits {
                max_batch: settings.max_batch,
                max_body_bytes: settings.max_body_bytes,
            },
            shutting_down: Arc::new(AtomicBool::new(false)),
        });

        let sweeper = tokio::spawn(run_sweeper(store));

        let listener = TcpListener::bind(settings.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let max_body = settings.max_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(from_fn(http::middleware::front_door))
                .configure(http::routes)
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(settings.shutdown_timeout.as_secs());
        if let Some(w) = settings.workers {
            server = server.workers(w);
        }
        let server = server.listen(listener)?.run();
        Ok(Self {
            port,
            server,
            bootstrap,
            sweeper,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests; SIGTERM is handled by actix itself).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.sweeper.abort();
        result
    }
}

async fn run_sweeper(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(retired = n, "expired reservations retired"),
            Err(e) => tracing::debug!(error = %e, "sweep failed; will retry"),
        }
    }
}
