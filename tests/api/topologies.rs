//! Real Redis Cluster and Sentinel topologies on loopback, spawned by the
//! tests: a 3-master cluster (`--cluster-enabled yes` ×3 + `redis-cli --cluster
//! create`), and a master + replica + 3 Sentinels. Killed on drop.

use crate::helpers::{free_port, redis_binary};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cooplocker-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within {within:?}");
}

/// One redis-server process (a cluster node, a replica or a Sentinel).
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(args: &[String]) -> Child {
        Command::new(redis_binary())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    /// Starts a node on a free port, `args` made for that port. A port that
    /// another test's process took between `free_port()` and the bind (tests
    /// run in parallel) makes redis-server exit: then it starts again on
    /// another port, a few times.
    fn start(mut args: impl FnMut(u16) -> Vec<String>) -> Self {
        for _ in 0..4 {
            let port = free_port();
            let mut node = Self {
                port,
                child: Some(Self::spawn(&args(port))),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if cli(port, &["PING"]).trim() == "PONG" {
                    // Ours, not another test's server that took the port
                    // first (ours then exits: start again elsewhere).
                    let pid = node.child.as_ref().map_or(0, |c| c.id());
                    if crate::helpers::serves_as(port, pid) {
                        return node;
                    }
                    break;
                }
                let exited = node
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            node.kill();
        }
        panic!("no redis-server came up on a free port in four tries");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster with no replicas.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = TempDir::new("cluster");
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                Node::start(|port| {
                    [
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--dir",
                        &dir.0.to_string_lossy(),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            wait_until("cluster_state:ok", Duration::from_secs(20), || {
                cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Self { nodes, _dir: dir }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

pub const MASTER_NAME: &str = "cooplocker";

/// A master, one replica and three Sentinels (quorum 2, down after 1 s).
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: TempDir,
}

impl SentinelSet {
    pub fn start() -> Self {
        let dir = TempDir::new("sentinel");
        let plain = |extra: &[&str]| {
            Node::start(|port| {
                let mut args: Vec<String> = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir.0.to_string_lossy(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(extra.iter().map(|s| s.to_string()));
                args
            })
        };
        let master = plain(&[]);
        let replica = plain(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let sentinels: Vec<Node> = (0..3)
            .map(|_| {
                Node::start(|port| {
                let conf = dir.0.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir.0.display(),
                        master.port
                    ),
                )
                .expect("sentinel conf");
                vec![conf.to_string_lossy().into_owned(), "--sentinel".into()]
                })
            })
            .collect();
        for s in &sentinels {
            wait_until(
                "the Sentinels know the master",
                Duration::from_secs(10),
                || {
                    cli(
                        s.port,
                        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                    )
                    .contains(&master.port.to_string())
                },
            );
        }
        Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// Waits until every Sentinel has discovered the replica (needed before a
    /// failover can promote it) and the replica is in sync.
    pub fn wait_for_replica(&self) {
        wait_until("replica in sync", Duration::from_secs(20), || {
            cli(self.replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        for s in &self.sentinels {
            wait_until(
                "the Sentinels know the replica",
                Duration::from_secs(30),
                || {
                    cli(s.port, &["SENTINEL", "replicas", MASTER_NAME])
                        .contains(&self.replica.port.to_string())
                },
            );
        }
    }

    /// The port of the master the Sentinels name now.
    pub fn current_master_port(&self) -> Option<u16> {
        let out = cli(
            self.sentinels[0].port,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }
}
