//! A graceful stop behind the project's own load balancer (`deploy/nginx.conf`,
//! run by the real nginx): three processes of the binary on one Redis, eight
//! writers through nginx, SIGTERM one instance mid-traffic. No request may be
//! lost: no 502 (nginx never retries a POST it has sent), and every write the
//! service confirmed is held afterwards.

use crate::helpers::{create_tenant, free_port, signal, RedisServer, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

fn nginx_binary() -> &'static str {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is not installed ({NGINX} is missing): this test runs the project's \
         deploy/nginx.conf in front of real instances. Run the README's test command \
         (bash scripts/test.sh), which installs nginx-light, or `apt-get install nginx-light`."
    );
    NGINX
}

struct Instance {
    port: u16,
    child: Option<Child>,
    redis_url: String,
}

impl Instance {
    fn start(redis_url: &str) -> Self {
        let mut i = Self {
            port: free_port(),
            child: None,
            redis_url: redis_url.to_string(),
        };
        i.spawn();
        i
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
            .env("REDIS_URL", &self.redis_url)
            .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COOPLOCKER_RATE_LIMITS", "enterprise=1000000")
            .env("COOPLOCKER_WORKERS", "2")
            .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "10")
            .env("COOPLOCKER_TRUSTED_PROXIES", "1")
            .env("RUST_LOG", "warn")
            .env_remove("COOPLOCKER_TOKEN_SECRET")
            .stdout(Stdio::null())
            .spawn()
            .expect("start an instance");
        self.child = Some(child);
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let up = crate::helpers::eventually(Duration::from_secs(15), || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up.is_some(), "instance on {} did not get ready", self.port);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nginx with `deploy/nginx.conf`, its upstreams pointed at `ports`, under a
/// temporary prefix, in the foreground.
struct Nginx {
    port: u16,
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    fn start(ports: &[u16]) -> Self {
        let binary = nginx_binary();
        let port = free_port();
        let prefix =
            std::env::temp_dir().join(format!("cooplocker-nginx-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let p = prefix.to_string_lossy().into_owned();
        let deploy =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
                .expect("deploy/nginx.conf");
        let mut conf = String::new();
        conf.push_str(&format!(
            "daemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n"
        ));
        for line in deploy.lines() {
            let t = line.trim_start();
            let line = if let Some(rest) = t.strip_prefix("server cooplocker-") {
                // "server cooplocker-N:8080 <params>;" → a test instance.
                let n: usize = rest[..1].parse().expect("upstream number");
                let params = rest.split_once(' ').map_or(";", |(_, p)| p);
                format!("    server 127.0.0.1:{} {params}", ports[n - 1])
            } else if t.starts_with("listen 8080;") {
                format!(
                    "    listen 127.0.0.1:{port};\n    access_log off;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;"
                )
            } else if t.starts_with("worker_processes") {
                "worker_processes 2;".to_string()
            } else {
                line.to_string()
            };
            conf.push_str(&line);
            conf.push('\n');
        }
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(binary)
            .args([
                "-p",
                &p,
                "-c",
                &conf_path.to_string_lossy(),
                "-e",
                &format!("{p}/logs/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Self {
            port,
            child,
            prefix,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_behind_nginx_loses_no_write() {
    // Arrange: Redis, three instances, nginx in front, a tenant.
    let redis = RedisServer::start();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::start(&redis.url())).collect();
    let client = crate::helpers::client();
    for i in &instances {
        i.wait_ready(&client).await;
    }
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let nginx = Nginx::start(&ports);
    let base = nginx.base();
    let up = crate::helpers::eventually(Duration::from_secs(10), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "nginx answers:\n{}", nginx.error_log());
    let (_, key) = create_tenant(&client, &base, "drain-nginx", "enterprise").await;

    // Three rounds, each stopping another instance while eight writers run.
    let mut confirmed = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for (round, victim) in instances.iter_mut().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8 {
            let (client, base, key, stop) =
                (client.clone(), base.clone(), key.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut held = Vec::new();
                let mut seen = Vec::new();
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("r{round}-w{w}-{i}");
                    let res = client
                        .post(format!("{base}/api/v1/Reservation/reserve"))
                        .header("X-Api-Key", &key)
                        .json(&json!([{"requester": "d", "resource": name}]))
                        .send()
                        .await;
                    let Ok(res) = res else {
                        seen.push(0);
                        continue;
                    };
                    let status = res.status().as_u16();
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    seen.push(status);
                    if body["results"][0]["status"] == "RESERVED" {
                        held.push(name);
                    }
                }
                (held, seen)
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Act: SIGTERM one instance mid-traffic.
        let pid = victim.child.as_ref().map(Child::id).expect("running");
        assert!(signal(pid, "TERM"), "SIGTERM");
        let sent = Instant::now();
        let exited = loop {
            if let Some(status) = victim
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(12),
                "exits within the shutdown bound"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exited.success(), "exit status {exited:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let (held, seen) = w.await.expect("writer");
            confirmed.extend(held);
            for s in seen {
                *statuses.entry(s).or_default() += 1;
            }
        }
        // The stopped instance comes back for the next round.
        victim.child = None;
        victim.spawn();
        victim.wait_ready(&client).await;
    }

    // Assert: no 502 (or other failure), and every confirmed write is held.
    let failed: usize = statuses
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        failed,
        0,
        "answers by status: {statuses:?}\nnginx error log:\n{}",
        nginx.error_log()
    );
    assert!(confirmed.len() > 300, "traffic ran: {statuses:?}");
    for chunk in confirmed.chunks(1000) {
        let items: Vec<Value> = chunk.iter().map(|r| json!({"resource": r})).collect();
        let res = client
            .post(format!("{base}/api/v1/Reservation/check"))
            .header("X-Api-Key", &key)
            .json(&items)
            .send()
            .await
            .expect("check");
        let body: Value = res.json().await.expect("check json");
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), chunk.len());
        for (name, r) in chunk.iter().zip(results) {
            assert_eq!(
                r["status"], "HELD",
                "confirmed write {name} is not held: {r}"
            );
        }
    }
    eprintln!(
        "{} writes confirmed and held; answers by status: {statuses:?}",
        confirmed.len()
    );
}

/// Reads one HTTP response head (and a `Content-Length` body) from `s`.
fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_idle_connections_get_one_more_answer_with_connection_close() {
    use std::io::{Read, Write};
    // Arrange: an instance (a real process) and two keep-alive connections
    // that have each had one answer.
    let redis = RedisServer::start();
    let mut instance = Instance::start(&redis.url());
    let client = crate::helpers::client();
    instance.wait_ready(&client).await;
    let port = instance.port;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let open = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(request).expect("send");
        let head = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s
    };
    let (mut busy, mut idle) = (open(), open());

    // Act: SIGTERM; a moment later the next request arrives on one of them.
    let pid = instance.child.as_ref().map(Child::id).expect("running");
    assert!(signal(pid, "TERM"), "SIGTERM");
    let sent = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (head, busy_closed, idle_closed_after) = tokio::task::spawn_blocking(move || {
        let answered = busy.write_all(request).is_ok();
        let head = if answered {
            read_response(&mut busy)
        } else {
            String::new()
        };
        let mut rest = Vec::new();
        let busy_closed = busy.read_to_end(&mut rest).is_ok();
        let _ = idle.read_to_end(&mut rest);
        (head, busy_closed, sent.elapsed())
    })
    .await
    .expect("raw connections");

    // Assert: the request is answered, with Connection: close, then that
    // connection ends; the idle one is closed after a quiet second, not at
    // once and not at the shutdown bound.
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "answered while draining: {head:?}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "with Connection: close: {head}"
    );
    assert!(busy_closed, "the answered connection is closed after it");
    assert!(
        idle_closed_after >= Duration::from_millis(900)
            && idle_closed_after < Duration::from_secs(5),
        "the idle connection closed {idle_closed_after:?} after SIGTERM"
    );
    let exited = crate::helpers::eventually(Duration::from_secs(5), || {
        let done = instance
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .is_some();
        async move { done }
    })
    .await;
    assert!(
        exited.is_some(),
        "the instance exits once its connections are closed"
    );
}
