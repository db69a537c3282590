//! Which Redis `REDIS_URL` names, and one command connection to it that the
//! store uses the same way whatever the topology:
//!
//! - `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS): one server
//!   (a `ConnectionManager`, reconnecting by itself).
//! - `redis+cluster://[user:pass@]host:port,host:port,...` (seed nodes;
//!   `rediss+cluster://` for TLS): Redis Cluster. Every key of a tenant carries
//!   its `{tenantId}` hash tag, so each script runs on one node.
//! - `redis+sentinel://[user:pass@]host:port,host:port,.../<master name>[/db]`
//!   (`rediss+sentinel://` for TLS to the master): the master that the
//!   Sentinels name. Credentials are for the master; the Sentinels are asked
//!   without. The master is looked up again after any connection failure and
//!   every second, so a failover is followed by itself.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A parsed `REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    Single(String),
    /// Seed node URLs.
    Cluster(Vec<String>),
    Sentinel {
        /// host:port of each Sentinel.
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
        tls: bool,
    },
}

fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{s:?}: the port is not a number"))?,
        ),
        _ => (s, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    Ok((host.to_string(), port))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses `REDIS_URL` into a topology; the error says what is wrong.
pub fn parse(raw: &str) -> Result<Topology, String> {
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or("must start with redis://, rediss://, redis+cluster:// or redis+sentinel://")?;
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => redis::Client::open(raw)
            .map(|_| Topology::Single(raw.to_string()))
            .map_err(|e| format!("not a usable Redis URL: {e}")),
        "redis+cluster" | "rediss+cluster" => {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((a, h)) => (format!("{a}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let base = if scheme == "rediss+cluster" {
                "rediss"
            } else {
                "redis"
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| host_port(h.trim(), 6379).map(|(h, p)| format!("{base}://{auth}{h}:{p}")))
                .collect::<Result<_, _>>()?;
            for n in &nodes {
                redis::Client::open(n.as_str())
                    .map_err(|e| format!("cluster node {n:?} is not usable: {e}"))?;
            }
            Ok(Topology::Cluster(nodes))
        }
        "redis+sentinel" | "rediss+sentinel" => {
            let (auth, rest) = match rest.rsplit_once('@') {
                Some((a, r)) => (Some(a), r),
                None => (None, rest),
            };
            let (username, password) = match auth {
                None => (None, None),
                Some(a) => match a.split_once(':') {
                    Some((u, p)) => (
                        Some(decode(u)).filter(|u| !u.is_empty()),
                        Some(decode(p)).filter(|p| !p.is_empty()),
                    ),
                    None => (Some(decode(a)).filter(|u| !u.is_empty()), None),
                },
            };
            let mut parts = rest.split('/');
            let hosts = parts.next().unwrap_or_default();
            let master = parts
                .next()
                .filter(|m| !m.is_empty())
                .ok_or("redis+sentinel:// needs the master name: redis+sentinel://host:26379,host:26379/mymaster")?;
            let db = match parts.next().filter(|d| !d.is_empty()) {
                None => 0,
                Some(d) => d
                    .parse::<i64>()
                    .map_err(|_| format!("{d:?} is not a database number"))?,
            };
            let sentinels = hosts
                .split(',')
                .map(|h| host_port(h.trim(), 26379))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Topology::Sentinel {
                sentinels,
                master: decode(master),
                db,
                username,
                password,
                tls: scheme == "rediss+sentinel",
            })
        }
        _ => Err(
            "must start with redis://, rediss://, redis+cluster:// or redis+sentinel:// (unset it for embedded mode)"
                .into(),
        ),
    }
}

/// A cluster connection, made on first use (so an instance starts, unready,
/// while the cluster is down) and kept: it follows the cluster's topology.
pub struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// The master a set of Sentinels names, followed through failovers.
pub struct SentinelMaster {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    /// The master's address and a connection to it.
    current: RwLock<Option<(String, ConnectionManager)>>,
}

impl SentinelMaster {
    fn cached(&self) -> Option<ConnectionManager> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// Asks the Sentinels for the master; switches the connection when it moved.
    async fn resolve(&self) -> RedisResult<ConnectionManager> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        if let Some((a, c)) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *a == addr {
                return Ok(c.clone());
            }
        }
        let conn = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        tracing::info!(master = %addr, "following the master the Sentinels name");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((addr, conn.clone()));
        Ok(conn)
    }

    async fn get(&self) -> RedisResult<ConnectionManager> {
        match self.cached() {
            Some(c) => Ok(c),
            None => self.resolve().await,
        }
    }

    /// After a failure that may mean the master moved: look it up again next time.
    fn suspect(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A client for the current master (for pub/sub).
    async fn client(&self) -> RedisResult<redis::Client> {
        self.sentinel.lock().await.async_get_client().await
    }

    /// The address of the master the command connection follows, if known.
    fn current_addr(&self) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(a, _)| a.clone())
    }
}

/// Whether an error may mean the Sentinel master moved.
fn master_may_have_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        )
}

/// One command connection, whatever the topology.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    Sentinel(Arc<SentinelMaster>),
}

impl Conn {
    /// Sets up the connection (lazily: nothing is contacted yet) and the
    /// clients the pub/sub subscriber may use.
    pub fn new(topology: &Topology, op_timeout: Duration) -> anyhow::Result<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Topology::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(op_timeout)
                    .response_timeout(op_timeout)
                    .retries(2)
                    .build()?;
                Conn::Cluster(Arc::new(LazyCluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                }))
            }
            Topology::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls,
            } => {
                let addrs = sentinels
                    .iter()
                    .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
                let mut b =
                    SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)?
                        .set_client_to_redis_db(*db);
                if let Some(u) = username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = password {
                    b = b.set_client_to_redis_password(p);
                }
                if *tls {
                    b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                }
                Conn::Sentinel(Arc::new(SentinelMaster {
                    sentinel: tokio::sync::Mutex::new(b.build()?),
                    config,
                    current: RwLock::new(None),
                }))
            }
        })
    }

    /// A client for a pub/sub connection, attempt `n` (cluster: the seed nodes
    /// in turn, since a cluster broadcasts every `PUBLISH` to every node;
    /// Sentinel: the current master).
    pub async fn pubsub_client(&self, topology: &Topology, n: usize) -> RedisResult<redis::Client> {
        match (self, topology) {
            (Conn::Sentinel(s), _) => s.client().await,
            (_, Topology::Cluster(nodes)) => redis::Client::open(nodes[n % nodes.len()].as_str()),
            (_, Topology::Single(url)) => redis::Client::open(url.as_str()),
            (_, Topology::Sentinel { .. }) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "sentinel topology without a sentinel connection",
            ))),
        }
    }

    /// Whether a pub/sub connection to `addr` is still on the master the
    /// Sentinels name (the command connection re-resolves it every second). A
    /// demoted master still answers pings, so a subscriber left on it would
    /// silently miss every message published on the new one.
    pub fn still_master(&self, addr: &str) -> bool {
        match self {
            Conn::Sentinel(s) => s.current_addr().is_none_or(|a| a == addr),
            _ => true,
        }
    }

    /// Runs `cmd` (which names no key, e.g. `SCAN`) on the node that holds
    /// `key`'s slot: on a cluster each node scans only its own keys.
    pub async fn on_node_of(&mut self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                c.get()
                    .await?
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
            other => cmd.query_async(other).await,
        }
    }

    /// Whether this topology can serve now beyond answering a ping: a Redis
    /// Cluster whose state is `fail` (a master down with its slots uncovered)
    /// refuses every command on every node, while a node still answers `PING`.
    pub async fn serving(&mut self) -> RedisResult<bool> {
        match self {
            Conn::Cluster(_) => {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(self).await?;
                Ok(info.lines().any(|l| l.trim() == "cluster_state:ok"))
            }
            _ => Ok(true),
        }
    }

    /// Follows a Sentinel failover promptly even when no command fails: the
    /// master is looked up every second.
    pub fn watch_master(&self) {
        if let Conn::Sentinel(s) = self {
            let weak = Arc::downgrade(s);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(s) = weak.upgrade() else { return };
                    let _ = s.resolve().await;
                }
            });
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                let c = c.clone();
                Box::pin(async move { c.get().await?.req_packed_command(cmd).await })
            }
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let result = s.get().await?.req_packed_command(cmd).await;
                    if result.as_ref().is_err_and(master_may_have_moved) {
                        s.suspect();
                    }
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => {
                let c = c.clone();
                Box::pin(
                    async move { c.get().await?.req_packed_commands(cmd, offset, count).await },
                )
            }
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let result = s.get().await?.req_packed_commands(cmd, offset, count).await;
                    if result.as_ref().is_err_and(master_may_have_moved) {
                        s.suspect();
                    }
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
            Conn::Sentinel(_) => 0,
        }
    }
}
