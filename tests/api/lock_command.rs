//! `cooplocker lock RESOURCE -- COMMAND` (contract section 20) as a user runs
//! it: the binary as a subprocess against a spawned server. The command runs
//! with the lock and its environment, its status comes back, a second lock
//! waits its turn, a wait that runs out gives 75, a lost lease gives 76 (the
//! command stopped), signals reach the command, and errors give 2 with one
//! line.

use crate::helpers::{free_port, spawn_app, Kind, TestApp};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A fresh directory for one test's files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cooplocker-lock-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `cooplocker lock ARGS...` against `app` with its key in the environment.
fn lock(app: &TestApp, args: &[&str]) -> Command {
    lock_with(&app.address, Some(&app.api_key), args)
}

fn lock_with(server: &str, key: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cooplocker"));
    cmd.arg("lock").args(args);
    for var in ["REDIS_URL", "COOPLOCKER_LISTEN", "COOPLOCKER_API_KEY"] {
        cmd.env_remove(var);
    }
    cmd.env("COOPLOCKER_SERVER", server);
    if let Some(k) = key {
        cmd.env("COOPLOCKER_API_KEY", k);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finish(child: Child, within: Duration) -> Output {
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("cooplocker lock finished in time")
        .expect("wait for cooplocker lock")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until `resource` is held; returns the holder's requester.
async fn until_held(app: &TestApp, resource: &str) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let r = app.check(serde_json::json!([{"resource": resource}])).await;
        if r.results()[0]["status"] == "HELD" {
            return r.results()[0]["requester"]
                .as_str()
                .unwrap_or("")
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{resource} was never held");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_under_the_lock_with_its_environment_and_status() {
    for kind in [Kind::Embedded, Kind::Redis] {
        // Arrange
        let app = spawn_app(kind).await;
        let dir = scratch();
        let file = dir.join("env");
        let script = format!(
            "echo \"$COOPLOCKER_RESOURCE $COOPLOCKER_FENCING_TOKEN\" > {}; sleep 0.5; exit 3",
            file.display()
        );

        // Act
        let child = lock(&app, &["jobs/nightly", "--", "sh", "-c", &script])
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid");
        let holder = until_held(&app, "jobs/nightly").await;
        let out = finish(child, Duration::from_secs(10)).await;

        // Assert
        assert_eq!(out.status.code(), Some(3), "{kind:?}: {}", stderr(&out));
        let written = read(&file);
        let (resource, token) = written.trim().split_once(' ').expect("two words");
        assert_eq!(resource, "jobs/nightly");
        assert!(token.parse::<u64>().is_ok_and(|t| t > 0), "{written:?}");
        assert!(
            holder.ends_with(&format!(":{pid}")) && holder.len() > pid.to_string().len() + 1,
            "default requester <hostname>:<pid>, got {holder:?}"
        );
        assert_eq!(app.check_status("jobs/nightly").await, "FREE", "released");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lock_waits_for_the_first_and_they_never_overlap() {
    let app = spawn_app(Kind::Embedded).await;
    let dir = scratch();
    let log = dir.join("log");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{}\n", app.api_key)).expect("key file");
    let script = |who: &str| {
        format!(
            "echo start {who} $COOPLOCKER_FENCING_TOKEN >> {log}; sleep 1; echo end {who} >> {log}",
            log = log.display()
        )
    };

    let first = lock(&app, &["shared-job", "--", "sh", "-c", &script("one")])
        .spawn()
        .expect("spawn");
    until_held(&app, "shared-job").await;
    // The second takes its key from a file.
    let second = lock_with(
        &app.address,
        None,
        &[
            "--key-file",
            key_file.to_str().expect("path"),
            "--wait",
            "10",
            "shared-job",
            "--",
            "sh",
            "-c",
            &script("two"),
        ],
    )
    .spawn()
    .expect("spawn");
    let (a, b) = tokio::join!(
        finish(first, Duration::from_secs(10)),
        finish(second, Duration::from_secs(10))
    );

    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let lines: Vec<String> = read(&log).lines().map(str::to_string).collect();
    let shape: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        shape,
        ["start one", "end one", "start two", "end two"],
        "{lines:?}"
    );
    let token = |l: &str| l.split(' ').nth(2).and_then(|t| t.parse::<u64>().ok());
    assert!(token(&lines[2]) > token(&lines[0]), "{lines:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_acquired_within_wait_exits_75_without_running_the_command() {
    let app = spawn_app(Kind::Embedded).await;
    app.reserve_one("busy", "someone-else", Some(30)).await;
    let dir = scratch();
    let ran = dir.join("ran");

    let start = Instant::now();
    let touch = format!("touch {}", ran.display());
    let child = lock(&app, &["--wait", "1", "busy", "--", "sh", "-c", &touch])
        .spawn()
        .expect("spawn");
    let out = finish(child, Duration::from_secs(10)).await;

    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(!ran.exists(), "the command must not run");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("busy") && err.contains("someone-else"),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_command_and_exits_76() {
    let app = spawn_app(Kind::Embedded).await;
    let dir = scratch();
    let got_term = dir.join("term");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; while :; do sleep 0.1; done",
        got_term.display()
    );
    let child = lock(&app, &["--ttl", "2", "lost-job", "--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    until_held(&app, "lost-job").await;

    let r = app.force_release("lost-job").await;
    assert_eq!(r.status, reqwest::StatusCode::NO_CONTENT);
    let start = Instant::now();
    let out = finish(child, Duration::from_secs(10)).await;

    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "lost within ttl/3 and a bit"
    );
    assert_eq!(read(&got_term).trim(), "term", "the command got SIGTERM");
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_5_s_after_the_loss() {
    let app = spawn_app(Kind::Embedded).await;
    let script = "trap '' TERM; while :; do sleep 0.1; done";
    let child = lock(&app, &["--ttl", "2", "stubborn", "--", "sh", "-c", script])
        .spawn()
        .expect("spawn");
    until_held(&app, "stubborn").await;

    app.force_release("stubborn").await;
    let start = Instant::now();
    let out = finish(child, Duration::from_secs(12)).await;

    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(8),
        "SIGKILL 5 s after the SIGTERM: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_passed_to_the_command_and_the_lock_is_released_after_it() {
    let app = spawn_app(Kind::Embedded).await;
    let dir = scratch();
    let got = dir.join("got");
    let script = format!(
        "trap 'echo got-term > {}; exit 143' TERM; while :; do sleep 0.1; done",
        got.display()
    );
    let child = lock(&app, &["term-job", "--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    until_held(&app, "term-job").await;

    assert!(crate::helpers::signal(pid, "TERM"));
    let out = finish(child, Duration::from_secs(5)).await;

    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert_eq!(read(&got).trim(), "got-term");
    assert_eq!(app.check_status("term-job").await, "FREE");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_by_a_signal_gives_128_plus_the_signal() {
    let app = spawn_app(Kind::Embedded).await;
    let child = lock(&app, &["sig-job", "--", "sh", "-c", "kill -KILL $$"])
        .spawn()
        .expect("spawn");
    let out = finish(child, Duration::from_secs(5)).await;
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stderr(&out));
    assert_eq!(app.check_status("sig-job").await, "FREE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_a_missing_key_or_a_server_down_exit_2_with_one_line() {
    let app = spawn_app(Kind::Embedded).await;
    let dir = scratch();
    let ran = dir.join("ran");
    let touch = format!("touch {}", ran.display());
    let cases = [
        (app.address.clone(), Some("not-a-key"), "API key"),
        (app.address.clone(), None, "COOPLOCKER_API_KEY"),
        (
            format!("http://127.0.0.1:{}", free_port()),
            Some(app.api_key.as_str()),
            "cannot reach",
        ),
    ];
    for (server, key, says) in cases {
        let start = Instant::now();
        let child = lock_with(&server, key, &["r", "--", "sh", "-c", &touch])
            .spawn()
            .expect("spawn");
        let out = finish(child, Duration::from_secs(10)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{server} {key:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(says), "{err:?} should say {says:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
    assert!(!ran.exists(), "the command never ran");
    let _ = std::fs::remove_dir_all(dir);
}
