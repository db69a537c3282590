//! Property tests (proptest) for every parser of client input: arbitrary bytes
//! and structured near-misses never panic, and each parser accepts exactly
//! what the contract allows. Then the whole HTTP surface: random requests to
//! every route are answered, never with a 5xx, and every error is the
//! contract's JSON error. Cases: `PROPTEST_CASES` (default 256;
//! `scripts/harness.sh` runs more).

use crate::helpers::{spawn_app, Kind, ADMIN_TOKEN};
use cooplocker::domain::jwt::JwtSettings;
use cooplocker::domain::{KeyLabel, Requester, Resource, TenantName, Tier, Ttl};
use cooplocker::events::{EventId, EventKind};
use cooplocker::http::body::{parse_batch, parse_object, Fields};
use cooplocker::http::query::Query;
use cooplocker::tokens::service::{looks_like_token, TokenKeys};
use cooplocker::tokens::verify::unverified_issuer;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that stress names: any text, plus hash tags, glob and Lua pattern
/// characters, key separators and control characters.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[\\x00-\\x1f\\x7f{}*?\\[\\]:%.\\\\]{1,8}",
        Just("{tag}".to_string()),
        Just("cl:{t}:r:x".to_string()),
        Just("a*".to_string()),
        Just("[a-z]".to_string()),
        Just("%d+".to_string()),
        Just("\u{feff}".to_string()),
        Just("é".repeat(129)),
        Just("x".repeat(257)),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "resource",
            "requester",
            "ttlSeconds",
            "releaseToken",
            "name",
            "tier",
            "label",
            "jwt",
            "tenant",
            "issuer",
            "audience",
            "algorithms",
            "hs256Secret",
            "publicKeyPem",
            "jwksUrl",
            "secret",
            "ttl",
        ])
        .prop_map(str::to_string),
        nasty_string(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON text, sometimes damaged: a byte replaced, or cut short, or a raw
/// fragment (duplicate keys, `1e309`, invalid UTF-8) spliced in.
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        json_value(),
        0usize..4,
        any::<prop::sample::Index>(),
        any::<u8>(),
        prop::sample::select(vec![
            &b"{\"resource\":\"a\",\"resource\":\"b\"}"[..],
            b"1e309",
            b"-0",
            b"\xff\xfe",
            b"\"\\ud800\"",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            b"{\"ttlSeconds\":99999999999999999999999}",
        ]),
    )
        .prop_map(|(v, how, at, byte, splice)| {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            let i = if b.is_empty() { 0 } else { at.index(b.len()) };
            match how {
                1 if !b.is_empty() => b[i] = byte,
                2 => b.truncate(i),
                3 => {
                    b.splice(i..i, splice.iter().copied());
                }
                _ => {}
            }
            b
        })
}

fn name_rule(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}')
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn names_accept_exactly_what_the_contract_allows(s in nasty_string()) {
        let ok = name_rule(&s);
        prop_assert_eq!(Resource::parse(s.clone()).is_ok(), ok);
        prop_assert_eq!(Requester::parse(s.clone()).is_ok(), ok);
        prop_assert_eq!(KeyLabel::parse(s.clone()).is_ok(), ok);
        prop_assert_eq!(TenantName::parse(s.clone()).is_ok(), ok);
        if ok {
            let parsed = Resource::parse(s.clone()).map(|r| r.as_str().to_string());
            prop_assert_eq!(parsed.ok(), Some(s));
        }
    }

    #[test]
    fn ttl_is_one_second_to_a_year(n in prop_oneof![any::<u64>(), 0u64..40_000_000]) {
        prop_assert_eq!(Ttl::from_seconds(n).is_ok(), (1..=31_536_000).contains(&n));
    }

    #[test]
    fn tier_parses_only_the_four_names(s in nasty_string()) {
        let known = ["free", "starter", "pro", "enterprise"].contains(&s.as_str());
        prop_assert_eq!(Tier::parse(&s).is_ok(), known);
    }

    #[test]
    fn batch_parser_never_panics_and_caps_items(b in body(), max in 0usize..8) {
        if let Ok(items) = parse_batch(&b, max) {
            prop_assert!(items.len() <= max);
            let v: Value = serde_json::from_slice(&b).expect("accepted bodies are JSON");
            prop_assert!(v.is_array());
        }
        let _ = parse_object(&b, true);
        let _ = parse_object(&b, false);
    }

    #[test]
    fn batch_parser_on_raw_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_batch(&b, 1000);
        let _ = parse_object(&b, false);
    }

    #[test]
    fn well_formed_batches_parse(items in prop::collection::vec(("[a-z]{1,8}", "[a-z]{1,8}"), 0..20)) {
        let body: Vec<Value> = items.iter().map(|(r, q)| json!({"resource": r, "requester": q})).collect();
        let bytes = serde_json::to_vec(&body).expect("json");
        let parsed = parse_batch(&bytes, 1000);
        prop_assert!(parsed.is_ok());
        prop_assert_eq!(parsed.map(|p| p.len()).unwrap_or_default(), items.len());
    }

    #[test]
    fn duplicate_keys_are_refused(key in "[a-zA-Z]{1,10}") {
        // The parsers keep every pair; reading the fields refuses the repeat.
        let text = format!(r#"[{{"{key}":"a","{key}":"b"}}]"#);
        let mut items = parse_batch(text.as_bytes(), 10).expect("parses");
        let mut details = Vec::new();
        let _ = Fields::new(Some(0), items.remove(0), &[key.as_str()], &mut details);
        prop_assert_eq!(details.len(), 1);
        let text = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let obj = parse_object(text.as_bytes(), false).expect("parses");
        let mut details = Vec::new();
        let _ = Fields::new(None, obj, &[key.as_str()], &mut details);
        prop_assert_eq!(details.len(), 1);
    }

    #[test]
    fn query_parser_never_panics(raw in prop_oneof![".{0,64}", "([a-z%0-9]{0,6}=[a-z%0-9&]{0,6}&?){0,6}"]) {
        let _ = Query::parse(&raw, &["prefix", "requester", "limit", "cursor"]);
        if let Ok(mut q) = Query::parse_repeatable(&raw, &["resource", "type"], &["resource", "type"]) {
            let _ = q.take_all("resource");
            let _ = q.integer("type", 1, 10);
        }
    }

    #[test]
    fn last_event_id_parses_only_ms_dash_seq(raw in prop_oneof![".{0,30}", "[0-9]{0,22}-[0-9]{0,22}"], ms in any::<u64>(), seq in any::<u64>()) {
        if let Some(id) = EventId::parse(&raw) {
            let (a, b) = raw.split_once('-').expect("accepted ids have a dash");
            prop_assert!(a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()));
            prop_assert_eq!((a.parse::<u64>().ok(), b.parse::<u64>().ok()), (Some(id.ms), Some(id.seq)));
        }
        prop_assert_eq!(EventId::parse(&format!("{ms}-{seq}")), Some(EventId { ms, seq }));
        let _ = EventKind::parse(&raw);
    }

    #[test]
    fn jwt_readers_never_panic(parts in prop::collection::vec(prop_oneof![".{0,40}", "[A-Za-z0-9_-]{0,60}"], 0..5)) {
        let jwt = parts.join(".");
        let _ = unverified_issuer(&jwt);
        let _ = looks_like_token(&jwt);
        let keys = TokenKeys::new(&["0123456789abcdef0123456789abcdef"]).expect("keys");
        prop_assert!(keys.check(&jwt).is_none(), "a random string verified");
        let _ = keys.check(&format!("eyJ{jwt}"));
    }

    #[test]
    fn jwt_settings_parser_never_panics(fields in prop::collection::vec((field_name(), json_value()), 0..8)) {
        let _ = JwtSettings::parse(fields);
    }
}

/// A random request to a random route (path parameters, query, headers and
/// body from the strategies above, with a valid key or admin token most of the
/// time): always answered, never a 5xx, and any error is the contract's JSON.
#[test]
fn random_requests_to_every_route_get_no_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(spawn_app(Kind::Embedded));
    let routes = cooplocker::http::served();
    let strategy = (
        any::<prop::sample::Index>(),
        prop::collection::vec(nasty_string(), 3),
        prop::option::of(prop::collection::vec((field_name(), nasty_string()), 0..4)),
        0u8..4,
        prop::option::of(nasty_string()),
        body(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(300),
        ..config()
    });
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(
        &strategy,
        |(route, params, query, auth, last_event_id, body)| {
            let (method, pattern) = routes[route.index(routes.len())];
            // Fill path parameters: the app's own tenant id half of the time.
            let mut path = String::new();
            let mut n = 0;
            for seg in pattern.split('/').skip(1) {
                path.push('/');
                if seg.starts_with('{') {
                    let value = if seg == "{id}" && n % 2 == 0 {
                        app.tenant_id.clone()
                    } else {
                        params[n % params.len()].clone()
                    };
                    n += 1;
                    path.push_str(&utf8_percent(&value));
                } else {
                    path.push_str(seg);
                }
            }
            if let Some(q) = &query {
                let q: Vec<String> = q
                    .iter()
                    .map(|(k, v)| format!("{}={}", utf8_percent(k), utf8_percent(v)))
                    .collect();
                path.push('?');
                path.push_str(&q.join("&"));
            }
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = app
                .client
                .request(method.clone(), app.url(&path))
                .header("Content-Type", "application/json")
                .timeout(std::time::Duration::from_secs(10))
                .body(body.clone());
            // Header values a client library can send at all (no CR, LF or NUL).
            let header = |v: &str| reqwest::header::HeaderValue::from_bytes(v.as_bytes()).ok();
            req = match auth {
                0 => req.header("X-Api-Key", &app.api_key),
                1 => req.bearer_auth(ADMIN_TOKEN),
                2 => match header(&params[0]) {
                    Some(v) => req.header("X-Api-Key", v),
                    None => req,
                },
                _ => req,
            };
            if let Some(v) = last_event_id.as_deref().and_then(header) {
                req = req.header("Last-Event-ID", v);
            }
            let answer = rt.block_on(async {
                let res = req.send().await.map_err(|e| format!("no answer: {e}"))?;
                let status = res.status();
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // An event stream never ends: its status and type are enough.
                let text = if ct.starts_with("text/event-stream") {
                    String::new()
                } else {
                    res.text().await.unwrap_or_default()
                };
                Ok::<_, String>((status, ct, text))
            });
            let (status, ct, text) = answer.map_err(TestCaseError::fail)?;
            *tally
                .lock()
                .expect("tally")
                .entry(status.as_u16())
                .or_default() += 1;
            let what = format!("{method} {path} -> {status} {text:.200}");
            prop_assert!(status.as_u16() < 500, "{}", what);
            if status.is_client_error() && method != reqwest::Method::HEAD {
                prop_assert!(ct.starts_with("application/json"), "{}", what);
                let v: Value =
                    serde_json::from_str(&text).map_err(|_| TestCaseError::fail(what.clone()))?;
                prop_assert!(v["error"]["code"].is_string(), "{}", what);
            }
            Ok(())
        },
    );
    drop(app);
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner().expect("tally");
    println!("statuses: {tally:?}");
    assert!(
        tally.keys().any(|s| *s < 300) && tally.keys().filter(|s| **s >= 400).count() >= 3,
        "the random requests did not reach both success and several refusals: {tally:?}"
    );
}

fn utf8_percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
