//! The ops kit (`k8s/monitoring`) against the real service: every metric (and
//! every label matcher) the Grafana dashboard's panels and the PrometheusRule's
//! alerts name must exist in a real scrape of `/metrics` after traffic that
//! makes every family appear. A renamed metric would otherwise leave an empty
//! panel and an alert that can never fire, and nothing would say so.

use crate::helpers::{create_tenant, spawn_app_with, Kind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DASHBOARD: &str = include_str!("../../k8s/monitoring/grafana-dashboard.json");
const RULES: &str = include_str!("../../k8s/monitoring/prometheusrule.yaml");

/// Series Prometheus makes itself, or that come from kube-state-metrics: the
/// only names the kit may use that the service does not export.
const EXTERNAL: &[&str] = &[
    "up",
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
];

/// Labels Prometheus attaches to every scraped series (target labels of the
/// ServiceMonitor), never in the scrape itself.
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "endpoint",
    "container",
];

/// PromQL words that look like names but are not series: operators,
/// modifiers and the aggregation operators (which may be followed by
/// `by (...)` before their parenthesis, so they do not look like calls).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// One selector in an expression: a metric and its label matchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    /// (label, operator, value)
    pub matchers: Vec<(String, String, String)>,
}

/// A quoted string at `chars[i]` (its opening quote); returns (content, next index).
fn quoted(chars: &[char], mut i: usize) -> (String, usize) {
    let quote = chars[i];
    i += 1;
    let mut out = String::new();
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' && i + 1 < chars.len() {
            i += 1;
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, i + 1)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The label matchers of a `{...}` at `chars[i]`; returns them and the index
/// after the closing brace.
fn matchers(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    i += 1;
    loop {
        i = skip_space(chars, i);
        if i >= chars.len() {
            return (out, i);
        }
        if chars[i] == '}' {
            return (out, i + 1);
        }
        if chars[i] == ',' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_name_char(chars[i]) {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        i = skip_space(chars, i);
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        i = skip_space(chars, i);
        assert!(
            !label.is_empty() && !op.is_empty() && i < chars.len() && "\"'`".contains(chars[i]),
            "cannot read the label matchers in {:?}",
            chars.iter().collect::<String>()
        );
        let (value, next) = quoted(chars, i);
        out.push((label, op, value));
        i = next;
    }
}

/// Every series selector a PromQL expression names. Function names, keywords,
/// grouping label lists (`by (...)`, `on (...)`), numbers, durations, ranges
/// (`[5m]`), strings and Grafana variables (`$x`, `${x}`) are not selectors.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = quoted(&chars, i).1;
        } else if c == '#' {
            // A comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (0.99, 1e3, 10m).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            // A selector without a metric name: not used by the kit.
            panic!("a selector without a metric name in {expr:?}");
        } else if is_name_start(c) {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(&chars, i);
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // Its label list, if any, names labels, not series.
                if chars.get(next) == Some(&'(') {
                    i = next;
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
                // An operator or modifier.
            } else if chars.get(next) == Some(&'(') {
                // A function call.
            } else if chars.get(next) == Some(&'{') {
                let (m, after) = matchers(&chars, next);
                out.push(Selector {
                    metric: word,
                    matchers: m,
                });
                i = after;
            } else {
                out.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// (where, expr) for every query of the dashboard: "panel <title>" per target.
fn dashboard_exprs() -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("dashboard panel {title:?}: a target without expr: {t}")
                });
                out.push((format!("dashboard panel {title:?}"), expr.to_string()));
            }
            walk(p["panels"].as_array().map_or(&[][..], Vec::as_slice), out);
        }
    }
    let dash: Value = serde_json::from_str(DASHBOARD).expect("grafana-dashboard.json is JSON");
    let mut out = Vec::new();
    walk(dash["panels"].as_array().expect("panels"), &mut out);
    out
}

/// (where, expr) for every alert of the PrometheusRule. The file keeps one
/// style (`- alert: Name` ... `expr: |` and the indented expression, or
/// `expr: <one line>`), which this reads without a YAML parser; the count of
/// alerts read is checked against the count of `- alert:` lines.
fn rule_exprs() -> Vec<(String, String)> {
    let lines: Vec<&str> = RULES.lines().collect();
    let mut out = Vec::new();
    let mut alert: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if let Some(name) = t.strip_prefix("- alert: ") {
            alert = Some(name.trim().to_string());
        } else if let Some(rest) = t.strip_prefix("expr:") {
            let name = alert.take().unwrap_or_else(|| {
                panic!(
                    "prometheusrule.yaml line {}: an expr without its alert",
                    i + 1
                )
            });
            let rest = rest.trim();
            let expr = if rest == "|" || rest == ">" || rest == "|-" || rest == ">-" {
                let indent = lines[i].len() - t.len();
                let mut body = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let ni = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && ni <= indent {
                        break;
                    }
                    body.push(next.trim());
                    i += 1;
                }
                body.join("\n")
            } else {
                rest.to_string()
            };
            out.push((format!("alert {name}"), expr));
        }
        i += 1;
    }
    let declared = RULES
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(out.len(), declared, "every alert's expr is read: {out:#?}");
    out
}

/// A scrape: metric name -> label name -> values seen.
type Scrape = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn parse_scrape(text: &str) -> Scrape {
    let mut out: Scrape = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            out.entry(name.to_string()).or_default();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let end = chars
            .iter()
            .position(|c| *c == '{' || c.is_whitespace())
            .unwrap_or(chars.len());
        let name: String = chars[..end].iter().collect();
        let labels = out.entry(name).or_default();
        if chars.get(end) == Some(&'{') {
            for (label, _, value) in matchers(&chars, end).0 {
                labels.entry(label).or_default().insert(value);
            }
        }
    }
    out
}

/// What is wrong with `sel` against `scrape`, if anything.
fn problems(sel: &Selector, scrape: &Scrape) -> Vec<String> {
    if EXTERNAL.contains(&sel.metric.as_str()) {
        return Vec::new();
    }
    let Some(labels) = scrape.get(&sel.metric) else {
        return vec![format!("metric {} is not in the scrape", sel.metric)];
    };
    let mut out = Vec::new();
    for (label, op, value) in &sel.matchers {
        if TARGET_LABELS.contains(&label.as_str()) {
            continue;
        }
        match labels.get(label) {
            None => out.push(format!("metric {} has no label {label}", sel.metric)),
            Some(values) if op == "=" && !value.contains('$') && !values.contains(value) => out
                .push(format!(
                    "metric {} never has {label}=\"{value}\" (seen: {values:?})",
                    sel.metric
                )),
            Some(_) => {}
        }
    }
    out
}

#[test]
fn the_expression_reader_finds_series_and_nothing_else() {
    let got = selectors(
        r#"sum by (namespace, le) (rate(cooplocker_x_bucket{job="cooplocker",op="sweep lease",route=~".*/(a|b)"}[$__rate_interval]))
          / on (namespace) group_left sum(rate(cooplocker_y_total[5m] offset 10m)) > 0.5 and absent(up{job="a"} == 1) or ${v} * 1e3"#,
    );
    let names: Vec<&str> = got.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["cooplocker_x_bucket", "cooplocker_y_total", "up"]);
    assert_eq!(
        got[0].matchers[1],
        ("op".into(), "=".into(), "sweep lease".into())
    );
    assert_eq!(got[0].matchers[2].1, "=~");
    // The kit's own files are read completely.
    assert!(rule_exprs().len() >= 10, "{:#?}", rule_exprs());
    assert!(dashboard_exprs().len() >= 20, "{:#?}", dashboard_exprs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    // Arrange: one instance on a real Redis; a free tier limited to one write
    // a second, for a 429.
    let mut app = spawn_app_with(Kind::Redis, |s| s.rate_limits.free = 1).await;
    let c = &app.client;
    let base = app.address.clone();

    // Act: traffic that makes every family appear.
    // A reserve and its release; an idempotent repeat of a reserve.
    let held = app.reserve_one("released", "ops", Some(30)).await;
    let r = app
        .unreserve(json!([{"resource": "released", "requester": "ops", "releaseToken": held["releaseToken"]}]))
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");
    for _ in 0..2 {
        let res = c
            .post(app.url("/api/v1/Reservation/reserve"))
            .header("X-Api-Key", &app.api_key)
            .header("Idempotency-Key", "ops-kit-1")
            .json(&json!([{"resource": "idem", "requester": "ops", "ttlSeconds": 30}]))
            .send()
            .await
            .expect("idempotent reserve");
        assert_eq!(res.status(), 200);
    }
    // Fencing tokens: one current, one stale.
    let fenced = app.reserve_one("fenced", "ops", Some(30)).await;
    let token = fenced["fencingToken"].as_i64().expect("fencing token");
    let r = app
        .post(
            "/api/v1/Reservation/validate",
            json!([{"resource": "fenced", "fencingToken": token}, {"resource": "fenced", "fencingToken": token - 1}]),
        )
        .await;
    assert_eq!(r.results()[1]["status"], "STALE", "{r:?}");
    // An expiry by TTL, a force release.
    app.reserve_one("expires", "ops", Some(1)).await;
    app.reserve_one("forced", "ops", Some(30)).await;
    assert!(app.force_release("forced").await.status.is_success());
    // A wait that times out, and one that is granted.
    app.reserve_one("busy", "holder", Some(30)).await;
    let r = app
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=1",
            json!([{"resource": "busy", "requester": "waiter", "ttlSeconds": 30}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "TIMED_OUT", "{r:?}");
    let first = app.reserve_one("handoff", "holder", Some(30)).await;
    let (c2, url, key) = (
        c.clone(),
        app.url("/api/v1/Reservation/reserve?waitSeconds=10"),
        app.api_key.clone(),
    );
    let waiter = tokio::spawn(async move {
        c2.post(url)
            .header("X-Api-Key", key)
            .json(&json!([{"resource": "handoff", "requester": "waiter", "ttlSeconds": 30}]))
            .send()
            .await
            .expect("waiting reserve")
            .json::<Value>()
            .await
            .expect("json")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.unreserve(json!([{"resource": "handoff", "requester": "holder", "releaseToken": first["releaseToken"]}]))
        .await;
    let granted = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is granted in time")
        .expect("waiter");
    assert_eq!(granted["results"][0]["status"], "RESERVED", "{granted}");
    // An event stream, open while we scrape.
    let _stream = crate::events::Stream::open(&base, &app.api_key, "", None).await;
    // 4xx: a bad body, an unknown key; a rejected JWT exchange.
    let r = app
        .reserve(json!([{"resource": "", "requester": "ops"}]))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(app.get_as("nope", "/api/v1/Reservation").await.status, 401);
    let r = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/tenants/{}", app.tenant_id),
            Some(json!({"jwt": {"issuer": "ops-kit", "audience": "cooplocker", "algorithms": ["HS256"],
                "hs256Secret": "an-hs256-secret-of-enough-length-0123456789"}})),
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let res = c
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"jwt": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "tenant": app.tenant_id}))
        .send()
        .await
        .expect("token exchange");
    assert_eq!(res.status(), 401, "a bad JWT is rejected");
    // 429: a free tenant past its write limit.
    let (_, free_key) = create_tenant(c, &base, "ops-free", "free").await;
    let mut limited = false;
    for i in 0..20 {
        let res = c
            .post(format!("{base}/api/v1/Reservation/reserve"))
            .header("X-Api-Key", &free_key)
            .json(&json!([{"resource": format!("f{i}"), "requester": "ops", "ttlSeconds": 30}]))
            .send()
            .await
            .expect("free reserve");
        if res.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the free tier's limit answered 429");
    // The sweeper retires the expired hold.
    let scrape_text = || async {
        c.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape text")
    };
    let expired = crate::helpers::eventually(Duration::from_secs(10), || async {
        scrape_text()
            .await
            .lines()
            .any(|l| l.starts_with("cooplocker_reservations_expired_total "))
    })
    .await;
    assert!(expired.is_some(), "the sweeper retired the expired hold");
    // Last, a store error: Redis goes away under a request.
    app.redis.as_mut().expect("redis").kill();
    let r = app
        .reserve(json!([{"resource": "down", "requester": "ops"}]))
        .await;
    assert_eq!(r.status, 503, "{r:?}");

    // Assert: every selector of every panel and alert names something real.
    let scrape = parse_scrape(&scrape_text().await);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (place, expr) in dashboard_exprs().into_iter().chain(rule_exprs()) {
        let sels = selectors(&expr);
        if sels.is_empty() {
            wrong.push(format!("{place}: names no metric: {expr}"));
        }
        for sel in sels {
            checked += 1;
            for p in problems(&sel, &scrape) {
                wrong.push(format!("{place}: {p}\n    in: {expr}"));
            }
        }
    }
    let exported: Vec<&String> = scrape.keys().collect();
    assert!(
        wrong.is_empty(),
        "{} of {checked} selectors name what the service does not export:\n{}\n\nexported: {exported:#?}",
        wrong.len(),
        wrong.join("\n")
    );
    eprintln!(
        "{checked} selectors checked against a scrape of {} series names",
        scrape.len()
    );
}
