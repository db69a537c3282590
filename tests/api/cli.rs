//! The binary itself: `cooplocker admin ...` against a running instance, and
//! configuration errors at start-up.

use crate::helpers::{spawn_app, Kind, ADMIN_TOKEN};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;

fn cooplocker(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cooplocker"));
    cmd.args(args);
    for var in [
        "REDIS_URL",
        "COOPLOCKER_LISTEN",
        "COOPLOCKER_ADMIN_TOKEN",
        "COOPLOCKER_MAX_BATCH",
        "COOPLOCKER_RATE_LIMITS",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run cooplocker")
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_subcommands_drive_a_running_server() {
    let app = spawn_app(Kind::Redis).await;
    let env = [
        ("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN),
        ("COOPLOCKER_SERVER", app.address.as_str()),
    ];
    let run = |args: &[&str]| cooplocker(args, &env);

    let created = json_out(&run(&[
        "admin", "tenants", "create", "--name", "cli-co", "--tier", "starter",
    ]));
    let tenant = created["tenant"]["id"].as_str().expect("id").to_string();
    let key = created["apiKey"]["key"].as_str().expect("key").to_string();
    assert_eq!(created["tenant"]["tier"], "starter");

    let listed = json_out(&run(&["admin", "tenants", "list"]));
    assert!(listed["tenants"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x["id"] == tenant.as_str())));
    let updated = json_out(&run(&[
        "admin", "tenants", "update", &tenant, "--tier", "pro",
    ]));
    assert_eq!(updated["tier"], "pro");

    // The lease policy: fields set, one removed with `none`, then reset; a
    // bad value is the server's 400, exit 1, nothing changed.
    let updated = json_out(&run(&[
        "admin",
        "tenants",
        "update",
        &tenant,
        "--max-ttl",
        "300",
        "--require-ttl",
        "true",
        "--max-hold",
        "3600",
        "--lock-delay",
        "5",
        "--max-wait",
        "120",
    ]));
    assert_eq!(
        updated["policy"],
        serde_json::json!({"maxTtlSeconds":300,"requireTtl":true,"maxHoldSeconds":3600,
            "lockDelaySeconds":5,"maxWaitSeconds":120})
    );
    let updated = json_out(&run(&[
        "admin",
        "tenants",
        "update",
        &tenant,
        "--max-hold",
        "none",
    ]));
    assert_eq!(updated["policy"]["maxHoldSeconds"], Value::Null);
    assert_eq!(updated["policy"]["maxTtlSeconds"], 300);
    let bad = run(&["admin", "tenants", "update", &tenant, "--lock-delay", "61"]);
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("policy.lockDelaySeconds")
            || String::from_utf8_lossy(&bad.stderr).contains("policy.lockDelaySeconds"),
        "{bad:?}"
    );
    let got = json_out(&run(&["admin", "tenants", "get", &tenant]));
    assert_eq!(got["policy"]["lockDelaySeconds"], 5);
    let reset = json_out(&run(&[
        "admin",
        "tenants",
        "update",
        &tenant,
        "--reset-policy",
    ]));
    assert_eq!(reset["policy"]["maxTtlSeconds"], Value::Null);
    assert_eq!(reset["policy"]["maxWaitSeconds"], 60);
    assert_eq!(reset["policy"]["requireTtl"], false);

    // JWT settings: from a PEM file, from a secret file (never shown back),
    // and removed.
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa_public.pem");
    let set = json_out(&run(&[
        "admin",
        "tenants",
        "jwt",
        &tenant,
        "--issuer",
        "https://cli.example",
        "--audience",
        "cli",
        "--public-key-file",
        pem,
    ]));
    assert_eq!(set["jwt"]["algorithms"], serde_json::json!(["RS256"]));
    let secret_file = std::env::temp_dir().join(format!("cl-secret-{}", std::process::id()));
    let secret = "a-secret-from-a-file-of-32-bytes-or-more";
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let set = json_out(&run(&[
        "admin",
        "tenants",
        "jwt",
        &tenant,
        "--issuer",
        "https://cli.example",
        "--audience",
        "cli",
        "--hs256-secret-file",
        secret_file.to_str().expect("path"),
    ]));
    let _ = std::fs::remove_file(&secret_file);
    assert_eq!(set["jwt"]["algorithms"], serde_json::json!(["HS256"]));
    assert!(!set.to_string().contains(secret), "{set}");
    let no_key = run(&[
        "admin",
        "tenants",
        "jwt",
        &tenant,
        "--issuer",
        "i",
        "--audience",
        "a",
    ]);
    assert_eq!(no_key.status.code(), Some(2));
    let cleared = json_out(&run(&["admin", "tenants", "jwt", &tenant, "--clear"]));
    assert_eq!(cleared["jwt"], Value::Null);

    let k = json_out(&run(&["admin", "keys", "create", &tenant, "--label", "ci"]));
    let key_id = k["id"].as_str().expect("key id").to_string();
    let keys = json_out(&run(&["admin", "keys", "list", &tenant]));
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2));
    let rotated = json_out(&run(&["admin", "keys", "rotate", &tenant, &key_id]));
    assert_ne!(rotated["key"], k["key"]);
    assert_eq!(k["scope"], "write");

    // A read-only key: --scope read, shown in the listing; anything else is
    // refused by the CLI itself.
    let reader = json_out(&run(&[
        "admin", "keys", "create", &tenant, "--label", "dash", "--scope", "read",
    ]));
    assert_eq!(reader["scope"], "read");
    let keys = json_out(&run(&["admin", "keys", "list", &tenant]));
    let scopes: Vec<&str> = keys["keys"]
        .as_array()
        .map(|ks| ks.iter().filter_map(|k| k["scope"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(scopes, ["write", "write", "read"]);
    let bad = run(&[
        "admin", "keys", "create", &tenant, "--label", "x", "--scope", "admin",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let reader_id = reader["id"].as_str().expect("key id");
    assert!(run(&["admin", "keys", "delete", &tenant, reader_id])
        .status
        .success());

    let r = app
        .post_as(
            &key,
            "/api/v1/Reservation/reserve",
            serde_json::json!([{"resource":"x/y","requester":"q"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED");
    let released = run(&["admin", "release", &tenant, "x/y"]);
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    let again = run(&["admin", "release", &tenant, "x/y"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("NOT_FOUND"));

    assert!(run(&["admin", "keys", "delete", &tenant, &key_id])
        .status
        .success());
    assert!(run(&["admin", "tenants", "delete", &tenant])
        .status
        .success());
    let gone = run(&["admin", "tenants", "get", &tenant]);
    assert!(!gone.status.success());

    let no_token = cooplocker(
        &["admin", "tenants", "list"],
        &[("COOPLOCKER_SERVER", app.address.as_str())],
    );
    assert_eq!(no_token.status.code(), Some(2));
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    for (var, value) in [
        ("COOPLOCKER_LISTEN", "not-an-address"),
        ("REDIS_URL", "http://example"),
        ("COOPLOCKER_MAX_BATCH", "0"),
        ("COOPLOCKER_RATE_LIMITS", "gold=5"),
        ("COOPLOCKER_ADMIN_TOKEN", "short"),
        ("COOPLOCKER_TOKEN_SECRET", "too-short"),
        ("COOPLOCKER_TOKEN_TTL", "5"),
        ("COOPLOCKER_TOKEN_EXCHANGE_PER_IP", "0"),
    ] {
        let out = cooplocker(&["serve"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{var}: {err}");
        assert!(err.contains(var), "{var} not named in: {err}");
    }
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = cooplocker(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "COOPLOCKER_LISTEN",
        "REDIS_URL",
        "COOPLOCKER_ADMIN_TOKEN",
        "COOPLOCKER_LOG_FORMAT",
        "COOPLOCKER_RATE_LIMITS",
        "COOPLOCKER_EVENTS_RETAIN",
        "COOPLOCKER_PUBLIC_LOCKS",
        "COOPLOCKER_MAX_BATCH",
        "COOPLOCKER_MAX_BODY_BYTES",
        "COOPLOCKER_SHUTDOWN_TIMEOUT",
        "COOPLOCKER_STORE_TIMEOUT_MS",
        "COOPLOCKER_WORKERS",
        "COOPLOCKER_DEFAULT_API_KEY",
        "COOPLOCKER_TOKEN_SECRET",
        "COOPLOCKER_TOKEN_TTL",
        "COOPLOCKER_TOKEN_EXCHANGE_PER_IP",
    ] {
        assert!(help.contains(&format!("env: {var}")), "--help lacks {var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_prints_a_working_default_key() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env_remove("REDIS_URL")
        .env_remove("COOPLOCKER_ADMIN_TOKEN")
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let mut key = None;
    let mut admin = None;
    for line in BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(20)
    {
        if let Some(k) = line.trim().strip_prefix("API key:") {
            key = Some(k.trim().to_string());
        }
        if let Some(t) = line.trim().strip_prefix("admin token:") {
            admin = t.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let key = key.expect("the API key is printed");
    assert!(admin.is_some(), "a generated admin token is printed");
    let client = crate::helpers::client();
    let r = client
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/Reservation/reserve"
        ))
        .header("X-Api-Key", &key)
        .json(&serde_json::json!([{"requester":"my-app","resource":"my-first-lock"}]))
        .send()
        .await
        .expect("reserve");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["results"][0]["status"], "RESERVED");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_event_streams_promptly_and_exits_cleanly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let key = "ck_sigterm-test-key-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env_remove("REDIS_URL")
        .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("COOPLOCKER_DEFAULT_API_KEY", key)
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "30")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let base = format!("http://127.0.0.1:{port}");
    let up = crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        crate::helpers::client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up.is_some(), "the server starts");
    let mut stream = crate::events::Stream::open(&base, key, "", None).await;
    assert!(stream
        .next(std::time::Duration::from_millis(200))
        .await
        .is_none());

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    // The stream ends cleanly, long before the 30 s shutdown bound.
    assert!(stream
        .next(std::time::Duration::from_secs(5))
        .await
        .is_none());
    assert!(stream.ended, "the stream was closed by the server");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(5),
            "exits promptly"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_whether_the_local_server_answers() {
    let app = spawn_app(Kind::Embedded).await;
    let port = app.address.rsplit(':').next().expect("port").to_string();
    let listen = format!("0.0.0.0:{port}");
    let out = cooplocker(&["healthcheck"], &[("COOPLOCKER_LISTEN", listen.as_str())]);
    assert!(out.status.success(), "{out:?}");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let listen = format!("0.0.0.0:{dead}");
    let out = cooplocker(&["healthcheck"], &[("COOPLOCKER_LISTEN", listen.as_str())]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_traffic_loses_no_accepted_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let redis = crate::helpers::RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env("REDIS_URL", redis.url())
        .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "10")
        .env("COOPLOCKER_RATE_LIMITS", "enterprise=1000000")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let up = crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up.is_some(), "the server starts");
    let (tenant, key) = crate::helpers::create_tenant(&client, &base, "drain", "enterprise").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, base, key, stop) = (client.clone(), base.clone(), key.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut reserved = Vec::new();
            let mut statuses = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("drain-{w}-{i}");
                let res = client
                    .post(format!("{base}/api/v1/Reservation/reserve"))
                    .header("X-Api-Key", &key)
                    .json(&serde_json::json!([{"requester": "d", "resource": name}]))
                    .send()
                    .await;
                let Ok(res) = res else { break }; // refused: never accepted
                let status = res.status().as_u16();
                let Ok(body) = res.json::<Value>().await else {
                    statuses.push(0); // an accepted request whose answer was cut
                    break;
                };
                statuses.push(status);
                if body["results"][0]["status"] == "RESERVED" {
                    reserved.push(name);
                }
            }
            (reserved, statuses)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        // Well inside the 10 s bound: keep-alive connections are closed after
        // their in-flight request, not waited for.
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(3),
            "exits promptly while clients keep sending"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let exited_after = sent.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(status.success(), "exit status {status:?}");
    let mut all_reserved = Vec::new();
    for t in tasks {
        let (reserved, statuses) = t.await.expect("task");
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 503),
            "every answered request got a whole answer (200, or 503 while stopping): {statuses:?}"
        );
        all_reserved.extend(reserved);
    }
    assert!(
        all_reserved.len() > 50,
        "traffic ran: {}",
        all_reserved.len()
    );
    // Every reservation the service confirmed is really held.
    for chunk in all_reserved.chunks(500) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|name| format!("{}h:{name}", crate::helpers::key_prefix(&tenant)))
            .collect();
        let mut args = vec!["EXISTS"];
        args.extend(keys.iter().map(String::as_str));
        let held = redis.cli(&args);
        assert_eq!(
            held.trim(),
            chunk.len().to_string(),
            "a confirmed reservation is not held"
        );
    }
    eprintln!(
        "{} reservations confirmed, all held; exited {:?} after SIGTERM",
        all_reserved.len(),
        exited_after
    );
}
