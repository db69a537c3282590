//! Malformed requests (contract sections 1 and 8, and the kinds of section
//! 15): each gets a 4xx JSON error with the right code, and none of them
//! changes anything.

use crate::both_stores;
use crate::helpers::{into_reply, TestApp, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::json;

both_stores!(
    malformed_requests_change_nothing,
    oversized_requests_are_refused
);

pub struct Case {
    pub name: &'static str,
    pub method: Method,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub status: u16,
    pub code: &'static str,
    /// An admin API case: sent with the admin token, not the tenant's key.
    pub admin: bool,
}

impl Case {
    /// The path for the tenant under test (`{tenant}` stands for its id) and
    /// the credential header to send: the tenant's key, or the admin token.
    pub fn target(&self, tenant: &str, key: &str) -> (String, (&'static str, String)) {
        let path = self.path.replace("{tenant}", tenant);
        let credential = if self.admin {
            ("authorization", format!("Bearer {ADMIN_TOKEN}"))
        } else {
            ("x-api-key", key.to_string())
        };
        (path, credential)
    }
}

fn case(
    name: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path: path.to_string(),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
        admin: false,
    }
}

const RESERVE: &str = "/api/v1/Reservation/reserve";
const UNRESERVE: &str = "/api/v1/Reservation/unreserve";
const EXTEND: &str = "/api/v1/Reservation/extend";
const CHECK: &str = "/api/v1/Reservation/check";
const VALIDATE: &str = "/api/v1/Reservation/validate";
const KEYS: &str = "/api/v1/admin/tenants/{tenant}/keys";

/// Reserve items of a bad kind (contract section 15): (case name, the item's
/// kind fields, the field the error names). `mode` and `limit` together name
/// `limit`.
const BAD_KINDS: [(&str, &str, &str); 12] = [
    ("limit zero", r#""limit":0"#, "limit"),
    ("limit 10001", r#""limit":10001"#, "limit"),
    ("limit fractional", r#""limit":1.5"#, "limit"),
    ("limit as a string", r#""limit":"3""#, "limit"),
    ("limit negative", r#""limit":-1"#, "limit"),
    ("limit null", r#""limit":null"#, "limit"),
    ("mode in capitals", r#""mode":"SHARED""#, "mode"),
    ("mode empty", r#""mode":"""#, "mode"),
    ("mode null", r#""mode":null"#, "mode"),
    ("mode semaphore", r#""mode":"semaphore""#, "mode"),
    ("mode and limit", r#""mode":"shared","limit":3"#, "limit"),
    (
        "exclusive mode and limit",
        r#""mode":"exclusive","limit":3"#,
        "limit",
    ),
];

/// Reserve (and extend) items with a bad expiry warning (contract section
/// 18): (case name, the item's ttl and warning fields). Each names
/// `warnBeforeSeconds`.
const BAD_WARNINGS: [(&str, &str); 9] = [
    (
        "warning equal to the ttl",
        r#""ttlSeconds":60,"warnBeforeSeconds":60"#,
    ),
    (
        "warning above the ttl",
        r#""ttlSeconds":60,"warnBeforeSeconds":61"#,
    ),
    ("warning zero", r#""ttlSeconds":60,"warnBeforeSeconds":0"#),
    (
        "warning negative",
        r#""ttlSeconds":60,"warnBeforeSeconds":-1"#,
    ),
    (
        "warning fractional",
        r#""ttlSeconds":60,"warnBeforeSeconds":1.5"#,
    ),
    (
        "warning as a string",
        r#""ttlSeconds":60,"warnBeforeSeconds":"5""#,
    ),
    ("warning without a ttl", r#""warnBeforeSeconds":5"#),
    (
        "warning with a null ttl",
        r#""ttlSeconds":null,"warnBeforeSeconds":5"#,
    ),
    (
        "warning with a one-second ttl",
        r#""ttlSeconds":1,"warnBeforeSeconds":1"#,
    ),
];

/// A batch whose first item is a good semaphore request (of `ok`, so
/// "nothing changed" sees it was not applied either) and whose second has the
/// bad kind `kind`.
fn bad_kind_batch(kind: &str) -> String {
    format!(
        r#"[{{"resource":"ok","requester":"b","limit":3,"ttlSeconds":60}},{{"resource":"a","requester":"b","ttlSeconds":60,{kind}}}]"#
    )
}

/// The table of malformed requests (also replayed at scale by the harness).
pub fn cases() -> Vec<Case> {
    let long = "x".repeat(257);
    let warnings = BAD_WARNINGS.iter().map(|&(name, fields)| {
        case(
            name,
            RESERVE,
            format!(r#"[{{"resource":"ok","requester":"b","ttlSeconds":60}},{{"resource":"a","requester":"b",{fields}}}]"#),
            400,
            "INVALID_REQUEST",
        )
    });
    let mut v: Vec<Case> = warnings.collect();
    v.extend(vec![
        case("empty body", RESERVE, "", 400, "INVALID_REQUEST"),
        case("not json", RESERVE, "hello", 400, "INVALID_REQUEST"),
        case(
            "truncated json",
            RESERVE,
            "[{\"resource\":\"a\"",
            400,
            "INVALID_REQUEST",
        ),
        case(
            "object not array",
            RESERVE,
            r#"{"resource":"a","requester":"b"}"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "array of strings",
            RESERVE,
            r#"["a","b"]"#,
            400,
            "INVALID_REQUEST",
        ),
        case("null body", RESERVE, "null", 400, "INVALID_REQUEST"),
        case(
            "missing resource",
            RESERVE,
            r#"[{"requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "missing requester",
            RESERVE,
            r#"[{"resource":"a"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "empty resource",
            RESERVE,
            r#"[{"resource":"","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "empty requester",
            RESERVE,
            r#"[{"resource":"a","requester":""}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "resource too long",
            RESERVE,
            format!(r#"[{{"resource":"{long}","requester":"b"}}]"#),
            400,
            "INVALID_REQUEST",
        ),
        case(
            "control char",
            RESERVE,
            r#"[{"resource":"a\u0007","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "DEL char",
            RESERVE,
            r#"[{"resource":"a\u007f","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "resource a number",
            RESERVE,
            r#"[{"resource":5,"requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "unknown field",
            RESERVE,
            r#"[{"resource":"a","requester":"b","owner":"c"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "duplicate field",
            RESERVE,
            r#"[{"resource":"a","resource":"z","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl zero",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":0}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl negative",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":-5}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl over a year",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":31536001}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl fractional",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":1.5}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl string",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":"60"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl 1e309",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":1e309}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "ttl huge integer",
            RESERVE,
            r#"[{"resource":"a","requester":"b","ttlSeconds":99999999999999999999999}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "one bad item spoils the batch",
            RESERVE,
            r#"[{"resource":"ok","requester":"b"},{"resource":"","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "invalid utf-8",
            RESERVE,
            b"[{\"resource\":\"\xff\xfe\",\"requester\":\"b\"}]".to_vec(),
            400,
            "INVALID_REQUEST",
        ),
        case(
            "deep nesting",
            RESERVE,
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
            400,
            "INVALID_REQUEST",
        ),
        case(
            "unreserve missing token",
            UNRESERVE,
            r#"[{"resource":"a","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "unreserve token a number",
            UNRESERVE,
            r#"[{"resource":"a","requester":"b","releaseToken":7}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "extend missing ttl",
            EXTEND,
            r#"[{"resource":"a","requester":"b","releaseToken":"t"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "extend warning equal to the ttl",
            EXTEND,
            r#"[{"resource":"a","requester":"b","releaseToken":"t","ttlSeconds":5,"warnBeforeSeconds":5}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "extend warning zero",
            EXTEND,
            r#"[{"resource":"a","requester":"b","releaseToken":"t","ttlSeconds":5,"warnBeforeSeconds":0}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "extend warning as a string",
            EXTEND,
            r#"[{"resource":"a","requester":"b","releaseToken":"t","ttlSeconds":5,"warnBeforeSeconds":"1"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "extend null ttl",
            EXTEND,
            r#"[{"resource":"a","requester":"b","releaseToken":"t","ttlSeconds":null}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "check extra field",
            CHECK,
            r#"[{"resource":"a","requester":"b"}]"#,
            400,
            "INVALID_REQUEST",
        ),
        case(
            "check not objects",
            CHECK,
            r#"[1,2,3]"#,
            400,
            "INVALID_REQUEST",
        ),
    ]);
    for (name, token) in [
        ("validate negative token", "-1"),
        ("validate fractional token", "1.5"),
        ("validate token as a string", "\"3\""),
        ("validate null token", "null"),
        ("validate token of 2^64", "18446744073709551616"),
        ("validate token of 10^30", "1e30"),
        ("validate token as an object", "{}"),
    ] {
        v.push(case(
            name,
            VALIDATE,
            format!(r#"[{{"resource":"ok","fencingToken":1}},{{"resource":"a","fencingToken":{token}}}]"#),
            400,
            "INVALID_REQUEST",
        ));
    }
    for (name, kind, _) in BAD_KINDS {
        v.push(case(
            name,
            RESERVE,
            bad_kind_batch(kind),
            400,
            "INVALID_REQUEST",
        ));
    }
    // Waits (contract section 12) and atomic batches (section 13).
    let one = r#"[{"resource":"w","requester":"b","ttlSeconds":5}]"#;
    for (name, query) in [
        ("waitSeconds of 1e9", "waitSeconds=1e9"),
        ("waitSeconds of -0", "waitSeconds=-0"),
        ("waitSeconds quoted", "waitSeconds=%225%22"),
        ("waitSeconds over 60", "waitSeconds=61"),
        ("waitSeconds fractional", "waitSeconds=1.5"),
        ("waitSeconds empty", "waitSeconds="),
        ("waitSeconds twice", "waitSeconds=1&waitSeconds=1"),
        ("atomic of 1", "atomic=1"),
        ("an unknown query parameter", "wait=5"),
    ] {
        v.push(case(
            name,
            &format!("{RESERVE}?{query}"),
            one,
            400,
            "INVALID_REQUEST",
        ));
    }
    v.push(case(
        "waitSeconds without ttlSeconds",
        &format!("{RESERVE}?waitSeconds=1"),
        r#"[{"resource":"w","requester":"b"}]"#,
        400,
        "INVALID_REQUEST",
    ));
    v.push(case(
        "waitSeconds on unreserve",
        &format!("{UNRESERVE}?waitSeconds=1"),
        r#"[{"resource":"w","requester":"b","releaseToken":"t"}]"#,
        400,
        "INVALID_REQUEST",
    ));
    v.push(case(
        "locklock wait not a number",
        "/v1/api/lock/key/w?wait=soon",
        r#"{"expires_in":5}"#,
        400,
        "INVALID_REQUEST",
    ));
    v.push(case(
        "validate missing token",
        VALIDATE,
        r#"[{"resource":"a"}]"#,
        400,
        "INVALID_REQUEST",
    ));
    v.push(case(
        "validate extra field",
        VALIDATE,
        r#"[{"resource":"a","fencingToken":1,"requester":"b"}]"#,
        400,
        "INVALID_REQUEST",
    ));
    for (name, scope) in [
        ("key scope admin", "\"admin\""),
        ("key scope empty", "\"\""),
        ("key scope null", "null"),
        ("key scope number", "1"),
    ] {
        let mut c = case(
            name,
            KEYS,
            format!(r#"{{"label":"hostile","scope":{scope}}}"#),
            400,
            "INVALID_REQUEST",
        );
        c.admin = true;
        v.push(c);
    }
    let mut form = case(
        "form content type",
        RESERVE,
        r#"[{"resource":"a","requester":"b"}]"#,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    form.content_type = Some("application/x-www-form-urlencoded");
    v.push(form);
    let mut text = case(
        "text content type",
        RESERVE,
        r#"[{"resource":"a","requester":"b"}]"#,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    text.content_type = Some("text/plain");
    v.push(text);
    for (name, q) in [
        ("limit zero", "limit=0"),
        ("limit too big", "limit=10001"),
        ("limit not a number", "limit=ten"),
        ("garbage cursor", "cursor=%%%"),
        ("forged cursor", "cursor=r1.zz"),
        ("unknown query parameter", "owner=x"),
        ("duplicate query parameter", "limit=1&limit=2"),
        ("empty prefix", "prefix="),
        ("control char in requester", "requester=a%07"),
    ] {
        v.push(Case {
            name,
            method: Method::GET,
            path: format!("/api/v1/Reservation?{q}"),
            content_type: None,
            body: Vec::new(),
            status: 400,
            code: "INVALID_REQUEST",
            admin: false,
        });
    }
    v.push(Case {
        name: "wrong method",
        method: Method::DELETE,
        path: RESERVE.to_string(),
        content_type: None,
        body: Vec::new(),
        status: 405,
        code: "METHOD_NOT_ALLOWED",
        admin: false,
    });
    v.push(Case {
        name: "unknown route",
        method: Method::GET,
        path: "/api/v1/nothing-here".to_string(),
        content_type: None,
        body: Vec::new(),
        status: 404,
        code: "NOT_FOUND",
        admin: false,
    });
    v
}

async fn snapshot(app: &TestApp) -> Vec<serde_json::Value> {
    app.list_all("").await
}

async fn malformed_requests_change_nothing(app: TestApp) {
    app.reserve_one("sentinel", "keeper", None).await;
    let before = snapshot(&app).await;
    let cases = cases();
    assert!(cases.len() >= 30);
    let keys_path = format!("/tenants/{}/keys", app.tenant_id);
    let keys_before = app.admin(Method::GET, &keys_path, None).await.body;
    for c in cases {
        let (path, (header, credential)) = c.target(&app.tenant_id, &app.api_key);
        let mut req = app
            .client
            .request(c.method.clone(), app.url(&path))
            .header(header, credential)
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("Content-Type", ct);
        }
        let r = into_reply(req.send().await.expect("send")).await;
        assert_eq!(r.status.as_u16(), c.status, "case {:?}: {r:?}", c.name);
        assert_eq!(r.error_code(), c.code, "case {:?}", c.name);
    }
    // Items that would have been valid on their own were not applied either.
    assert_eq!(app.check_status("ok").await, "FREE");
    assert_eq!(app.check_status("a").await, "FREE");
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    let keys_after = app.admin(Method::GET, &keys_path, None).await.body;
    assert_eq!(keys_after, keys_before, "no key was made");

    // Details name the index and field.
    let r = app
        .reserve(json!([{"resource":"fine","requester":"b"},{"resource":"x","requester":"b","ttlSeconds":0}]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["details"][0]["index"], 1);
    assert_eq!(r.body["error"]["details"][0]["field"], "ttlSeconds");
    // A bad kind names the item and its field (`mode` or `limit`), also with
    // a wait or all or nothing, and leaves the good item's resource free.
    for (name, kind, field) in BAD_KINDS {
        for query in ["", "?atomic=true", "?atomic=true&waitSeconds=1"] {
            let r = app
                .post(
                    &format!("{RESERVE}{query}"),
                    serde_json::from_str(&bad_kind_batch(kind)).expect("a JSON batch"),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}{query}: {r:?}");
            assert_eq!(r.error_code(), "INVALID_REQUEST", "{name}{query}");
            let details = r.body["error"]["details"].as_array().expect("details");
            assert_eq!(details.len(), 1, "{name}{query}: {details:?}");
            assert_eq!(details[0]["index"], 1, "{name}{query}: {details:?}");
            assert_eq!(details[0]["field"], field, "{name}{query}: {details:?}");
        }
    }
    assert_eq!(app.check_status("ok").await, "FREE");
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    // A bad expiry warning names the item and `warnBeforeSeconds`, also with
    // a wait or all or nothing.
    for (name, fields) in BAD_WARNINGS {
        for query in ["", "?atomic=true", "?atomic=true&waitSeconds=1"] {
            let batch = format!(
                r#"[{{"resource":"ok","requester":"b","ttlSeconds":60}},{{"resource":"a","requester":"b",{fields}}}]"#
            );
            let r = app
                .post(
                    &format!("{RESERVE}{query}"),
                    serde_json::from_str(&batch).expect("a JSON batch"),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}{query}: {r:?}");
            let details = r.body["error"]["details"].as_array().expect("details");
            assert_eq!(details.len(), 1, "{name}{query}: {details:?}");
            assert_eq!(details[0]["index"], 1, "{name}{query}: {details:?}");
            assert_eq!(
                details[0]["field"], "warnBeforeSeconds",
                "{name}{query}: {details:?}"
            );
        }
    }
    assert_eq!(app.check_status("ok").await, "FREE");
    assert_eq!(snapshot(&app).await, before, "nothing changed");

    // Two X-Api-Key headers, and conflicting credentials.
    let two = app
        .client
        .get(app.url("/api/v1/Reservation"))
        .header("X-Api-Key", &app.api_key)
        .header("X-Api-Key", "other")
        .send()
        .await
        .expect("send");
    let two = into_reply(two).await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);
    assert_eq!(two.error_code(), "INVALID_REQUEST");
}

async fn oversized_requests_are_refused(app: TestApp) {
    let big = format!(
        "[{}]",
        vec![r#"{"resource":"r","requester":"q"}"#; 40_000].join(",")
    );
    assert!(big.len() > 1024 * 1024);
    let r = into_reply(
        app.client
            .post(app.url(RESERVE))
            .header("X-Api-Key", &app.api_key)
            .header("Content-Type", "application/json")
            .body(big)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.status);
    assert_eq!(r.error_code(), "PAYLOAD_TOO_LARGE");

    let items: Vec<serde_json::Value> = (0..1001)
        .map(|i| json!({"resource": format!("r{i}"), "requester": "q"}))
        .collect();
    let r = app.reserve(serde_json::Value::Array(items)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "INVALID_REQUEST");
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"resource": format!("r{i}"), "requester": "q"}))
        .collect();
    let r = app.reserve(serde_json::Value::Array(items)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.results().len(), 1000);

    let long_uri = format!("/api/v1/Reservation?prefix={}", "a".repeat(9000));
    let r = app.get(&long_uri).await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert_eq!(r.error_code(), "URI_TOO_LONG");

    let mut req = app
        .client
        .get(app.url("/api/v1/Reservation"))
        .header("X-Api-Key", &app.api_key);
    for i in 0..70 {
        req = req.header(format!("x-filler-{i}"), "v");
    }
    let r = into_reply(req.send().await.expect("send")).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.error_code(), "HEADERS_TOO_LARGE");
}

/// Sends `head` on a fresh connection (ignoring a write cut short by the
/// server closing) and returns everything answered until it closes.
fn raw_exchange(port: u16, head: &[u8]) -> (u16, String, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(head);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_past_the_framework_limits_get_json_errors() {
    let app = crate::helpers::spawn_app(crate::helpers::Kind::Embedded).await;
    let port: u16 = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let key = app.api_key.clone();
    let long_uri = format!(
        "GET /api/v1/Reservation?prefix={} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let huge_uri = format!(
        "GET /api/v1/Reservation?prefix={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let big_header = format!(
        "GET /api/v1/Reservation HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nX-Filler: {}\r\n\r\n",
        "b".repeat(200 * 1024)
    );
    let mut many = format!("GET /api/v1/Reservation HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-F{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let cases = [
        ("70 KiB URI", long_uri, 414, "URI_TOO_LONG"),
        ("200 KiB URI", huge_uri, 414, "URI_TOO_LONG"),
        ("200 KiB header", big_header, 431, "HEADERS_TOO_LARGE"),
        ("10,000 headers", many, 431, "HEADERS_TOO_LARGE"),
    ];
    for (case, head, status, code) in cases {
        let (got, content_type, body) =
            tokio::task::spawn_blocking(move || raw_exchange(port, head.as_bytes()))
                .await
                .expect("raw exchange");
        assert_eq!(got, status, "{case}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{case}: content type {content_type:?}"
        );
        assert_eq!(body["error"]["code"], code, "{case}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(body["error"]["details"].is_array(), "{case}: {body}");
    }
    // The instance still answers normally afterwards.
    assert_eq!(app.get("/api/v1/Reservation").await.status, StatusCode::OK);
}
