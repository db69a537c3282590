//! The reservation API, behaviour by behaviour (contract section 3).

use crate::every_topology;
use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

every_topology!(
    seeds_quick_start,
    paths_match_case_insensitively,
    ttl_expiry_frees_the_resource,
    extend_re_arms_the_ttl,
    unreserve_statuses,
    fencing_tokens_strictly_increase,
    batch_is_ordered_and_sees_its_own_items,
    check_reports_holder,
    listing_pages_each_item_once_in_order,
    listing_filters_by_prefix_and_requester,
    listing_never_shows_expired,
    tenants_are_isolated,
    health_and_readiness,
    odd_names_are_just_names,
);

/// The seed 000 quick start, literally.
async fn seeds_quick_start(app: TestApp) {
    let r = app
        .reserve(json!([{"requester":"my-app","resource":"my-first-lock"}]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let res = &r.results()[0];
    assert_eq!(res["resource"], "my-first-lock");
    assert_eq!(res["requester"], "my-app");
    assert_eq!(res["status"], "RESERVED");
    let token = res["releaseToken"]
        .as_str()
        .expect("releaseToken")
        .to_string();
    assert!(uuid::Uuid::parse_str(&token).is_ok(), "token is a UUID");
    assert!(res["expiresAt"].is_null());
    assert!(res["fencingToken"].as_u64().is_some());
    let at = res["reservedAt"].as_str().expect("reservedAt");
    assert!(
        at.ends_with('Z') && at.len() == 24,
        "RFC 3339 with millis: {at}"
    );

    for path in [
        "/api/v1/Reservation",
        "/api/v1/Reservation/activeReservations",
    ] {
        let l = app.get(path).await;
        assert_eq!(l.status, StatusCode::OK);
        let list = l.body["reservations"].as_array().expect("reservations");
        assert_eq!(list.len(), 1, "{l:?}");
        assert_eq!(list[0]["resource"], "my-first-lock");
        assert_eq!(list[0]["requester"], "my-app");
        assert!(list[0]["expiresAt"].is_null());
        assert_eq!(list[0]["apiKeyLabel"], "default");
        assert!(list[0].get("releaseToken").is_none(), "never listed");
        assert!(l.body["nextCursor"].is_null());
    }

    let c = app
        .reserve(json!([{"requester":"another-app","resource":"my-first-lock"}]))
        .await;
    let c = &c.results()[0];
    assert_eq!(c["status"], "ALREADY_HELD");
    assert_eq!(c["requester"], "another-app");
    assert_eq!(c["heldBy"], "my-app");
    assert!(c.get("releaseToken").is_none());

    let u = app
        .unreserve(json!([{"requester":"my-app","resource":"my-first-lock","releaseToken":token}]))
        .await;
    assert_eq!(u.status, StatusCode::OK);
    assert_eq!(
        u.body,
        json!({"results":[{"resource":"my-first-lock","requester":"my-app","status":"UNRESERVED"}]})
    );
    assert!(app.list_all("").await.is_empty());

    let again = app.reserve_one("my-first-lock", "another-app", None).await;
    assert_eq!(again["status"], "RESERVED");
}

async fn paths_match_case_insensitively(app: TestApp) {
    let r = app
        .post(
            "/API/V1/reservation/RESERVE",
            json!([{"requester":"a","resource":"Case/Sensitive"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED");
    let l = app.get("/api/v1/reservation/ACTIVERESERVATIONS").await;
    assert_eq!(l.body["reservations"][0]["resource"], "Case/Sensitive");
    // Resource names themselves stay case-sensitive.
    assert_eq!(app.check_status("case/sensitive").await, "FREE");
}

async fn ttl_expiry_frees_the_resource(app: TestApp) {
    let first = app.reserve_one("ttl", "a", Some(1)).await;
    let reserved = chrono::DateTime::parse_from_rfc3339(first["reservedAt"].as_str().unwrap_or(""))
        .expect("reservedAt");
    let expires = chrono::DateTime::parse_from_rfc3339(first["expiresAt"].as_str().unwrap_or(""))
        .expect("expiresAt");
    assert_eq!((expires - reserved).num_milliseconds(), 1000);
    assert_eq!(app.check_status("ttl").await, "HELD");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.check_status("ttl").await, "FREE");
    assert!(app.list_all("").await.is_empty());
    let token = first["releaseToken"].clone();
    let u = app
        .unreserve(json!([{"requester":"a","resource":"ttl","releaseToken":token}]))
        .await;
    assert_eq!(u.results()[0]["status"], "NOT_HELD");
    let second = app.reserve_one("ttl", "b", None).await;
    assert!(second["fencingToken"].as_u64() > first["fencingToken"].as_u64());
}

async fn extend_re_arms_the_ttl(app: TestApp) {
    let first = app.reserve_one("lease", "a", Some(1)).await;
    let token = first["releaseToken"].clone();
    let e = app
        .extend(json!([{"requester":"a","resource":"lease","releaseToken":token,"ttlSeconds":3}]))
        .await;
    let e0 = &e.results()[0];
    assert_eq!(e0["status"], "EXTENDED");
    assert!(e0["expiresAt"].as_str() > first["expiresAt"].as_str());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let c = app.check(json!([{"resource":"lease"}])).await;
    assert_eq!(c.results()[0]["status"], "HELD");
    assert_eq!(c.results()[0]["fencingToken"], first["fencingToken"]);
    assert_eq!(c.results()[0]["expiresAt"], e0["expiresAt"]);

    let wrong = app
        .extend(json!([{"requester":"a","resource":"lease","releaseToken":"nope","ttlSeconds":3}]))
        .await;
    assert_eq!(wrong.results()[0]["status"], "INVALID_TOKEN");
    let other = app
        .extend(json!([{"requester":"b","resource":"lease","releaseToken":token,"ttlSeconds":3}]))
        .await;
    assert_eq!(other.results()[0]["status"], "INVALID_TOKEN");
    let free = app
        .extend(json!([{"requester":"a","resource":"never","releaseToken":token,"ttlSeconds":3}]))
        .await;
    assert_eq!(free.results()[0]["status"], "NOT_HELD");

    // A reservation without TTL can be given one.
    let forever = app.reserve_one("forever", "a", None).await;
    let e = app
        .extend(json!([{"requester":"a","resource":"forever","releaseToken":forever["releaseToken"],"ttlSeconds":1}]))
        .await;
    assert_eq!(e.results()[0]["status"], "EXTENDED");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.check_status("forever").await, "FREE");
}

async fn unreserve_statuses(app: TestApp) {
    let held = app.reserve_one("u", "owner", None).await;
    let token = held["releaseToken"].clone();
    let r = app
        .unreserve(json!([
            {"requester":"owner","resource":"never-held","releaseToken":token},
            {"requester":"owner","resource":"u","releaseToken":"00000000-0000-0000-0000-000000000000"},
            {"requester":"thief","resource":"u","releaseToken":token},
        ]))
        .await;
    let statuses: Vec<&str> = r
        .results()
        .iter()
        .map(|x| x["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["NOT_HELD", "INVALID_TOKEN", "INVALID_TOKEN"]);
    assert_eq!(app.check_status("u").await, "HELD", "nothing changed");
    let ok = app
        .unreserve(json!([
            {"requester":"owner","resource":"u","releaseToken":token},
            {"requester":"owner","resource":"u","releaseToken":token},
        ]))
        .await;
    let statuses: Vec<&str> = ok
        .results()
        .iter()
        .map(|x| x["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["UNRESERVED", "NOT_HELD"]);
}

async fn fencing_tokens_strictly_increase(app: TestApp) {
    let mut last = 0u64;
    for i in 0..15 {
        let r = app.reserve_one("fenced", &format!("w{i}"), None).await;
        let ft = r["fencingToken"].as_u64().expect("fencing token");
        assert!(ft > last, "token {ft} after {last}");
        last = ft;
        let u = app
            .unreserve(json!([{"requester":format!("w{i}"),"resource":"fenced","releaseToken":r["releaseToken"]}]))
            .await;
        assert_eq!(u.results()[0]["status"], "UNRESERVED");
    }
    // Other resources have their own counters but the same rule.
    let other = app.reserve_one("other", "x", None).await;
    assert!(other["fencingToken"].as_u64().is_some());
}

async fn batch_is_ordered_and_sees_its_own_items(app: TestApp) {
    let r = app
        .reserve(json!([
            {"requester":"a","resource":"b1"},
            {"requester":"a","resource":"b2","ttlSeconds":60},
            {"requester":"a","resource":"b1"},
            {"requester":"c","resource":"b3","ttlSeconds":null},
        ]))
        .await;
    let res = r.results();
    assert_eq!(res.len(), 4);
    let got: Vec<(&str, &str)> = res
        .iter()
        .map(|x| {
            (
                x["resource"].as_str().unwrap_or(""),
                x["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("b1", "RESERVED"),
            ("b2", "RESERVED"),
            ("b1", "ALREADY_HELD"),
            ("b3", "RESERVED")
        ]
    );
    assert_eq!(res[2]["heldBy"], "a");
    assert!(res[1]["expiresAt"].is_string());
    let empty = app.reserve(json!([])).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"results": []}));
}

async fn check_reports_holder(app: TestApp) {
    let held = app.reserve_one("c1", "holder", Some(60)).await;
    let c = app
        .check(json!([{"resource":"c1"},{"resource":"c2"}]))
        .await;
    let res = c.results();
    assert_eq!(res[0]["status"], "HELD");
    assert_eq!(res[0]["requester"], "holder");
    assert_eq!(res[0]["reservedAt"], held["reservedAt"]);
    assert_eq!(res[0]["expiresAt"], held["expiresAt"]);
    assert_eq!(res[0]["fencingToken"], held["fencingToken"]);
    assert!(res[0].get("releaseToken").is_none());
    assert_eq!(res[1], json!({"resource":"c2","status":"FREE"}));
}

async fn listing_pages_each_item_once_in_order(app: TestApp) {
    let items: Vec<Value> = (0..25)
        .map(|i| json!({"requester": "lister", "resource": format!("item-{i:02}")}))
        .collect();
    let r = app.reserve(Value::Array(items)).await;
    assert!(r.results().iter().all(|x| x["status"] == "RESERVED"));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/Reservation?limit=10&cursor={c}"),
            None => "/api/v1/Reservation?limit=10".to_string(),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        let list = page.body["reservations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pages.push(list.len());
        seen.extend(
            list.iter()
                .map(|x| x["resource"].as_str().unwrap_or("").to_string()),
        );
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages.len() < 10, "too many pages");
    }
    let expected: Vec<String> = (0..25).map(|i| format!("item-{i:02}")).collect();
    assert_eq!(seen, expected, "each item exactly once, sorted");
    assert_eq!(pages, [10, 10, 5]);
}

async fn listing_filters_by_prefix_and_requester(app: TestApp) {
    let r = app
        .reserve(json!([
            {"requester":"alice","resource":"db/users"},
            {"requester":"bob","resource":"db/orders"},
            {"requester":"alice","resource":"cache/x"},
            {"requester":"alice","resource":"db"},
            {"requester":"bob","resource":"dc/1"},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let names = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|x| x["resource"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        names(app.list_all("prefix=db%2F").await),
        ["db/orders", "db/users"]
    );
    assert_eq!(
        names(app.list_all("prefix=db").await),
        ["db", "db/orders", "db/users"]
    );
    assert_eq!(
        names(app.list_all("requester=alice").await),
        ["cache/x", "db", "db/users"]
    );
    assert_eq!(
        names(app.list_all("requester=alice&prefix=db").await),
        ["db", "db/users"]
    );
    assert_eq!(
        names(app.list_all("requester=bob&limit=1").await),
        ["db/orders", "dc/1"]
    );
    assert!(app.list_all("requester=nobody").await.is_empty());
    assert!(app.list_all("prefix=zzz").await.is_empty());
}

async fn listing_never_shows_expired(app: TestApp) {
    app.reserve_one("short", "a", Some(1)).await;
    app.reserve_one("long", "a", Some(60)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let names: Vec<Value> = app.list_all("").await;
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["resource"], "long");
    let by_req = app.list_all("requester=a").await;
    assert_eq!(by_req.len(), 1);
    // Taken over by someone else: only listed under its new holder.
    app.reserve_one("short", "b", None).await;
    assert_eq!(app.list_all("requester=a").await.len(), 1);
    assert_eq!(app.list_all("requester=b").await[0]["resource"], "short");
}

async fn tenants_are_isolated(app: TestApp) {
    let (_, other_key) =
        crate::helpers::create_tenant(&app.client, &app.address, "other", "free").await;
    let mine = app.reserve_one("shared-name", "a", None).await;
    let theirs = app
        .post_as(
            &other_key,
            "/api/v1/Reservation/reserve",
            json!([{"requester":"a","resource":"shared-name"}]),
        )
        .await;
    assert_eq!(
        theirs.results()[0]["status"],
        "RESERVED",
        "independent namespaces"
    );
    // The other tenant sees only its own.
    let l = app.get_as(&other_key, "/api/v1/Reservation").await;
    assert_eq!(l.body["reservations"].as_array().map(Vec::len), Some(1));
    assert_eq!(l.body["reservations"][0]["apiKeyLabel"], "default");
    app.post_as(
        &other_key,
        "/api/v1/Reservation/reserve",
        json!([{"requester":"z","resource":"only-theirs"}]),
    )
    .await;
    assert_eq!(app.check_status("only-theirs").await, "FREE");
    // My token does nothing in their tenant.
    let u = app
        .post_as(
            &other_key,
            "/api/v1/Reservation/unreserve",
            json!([{"requester":"a","resource":"shared-name","releaseToken":mine["releaseToken"]}]),
        )
        .await;
    assert_eq!(u.results()[0]["status"], "INVALID_TOKEN");
    assert_eq!(app.list_all("").await.len(), 1);
}

async fn health_and_readiness(app: TestApp) {
    let h = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status(), StatusCode::OK);
    let r = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Hash tags, glob characters, percent signs, non-ASCII and maximal names are
/// ordinary names: they neither escape the tenant nor confuse listing.
async fn odd_names_are_just_names(app: TestApp) {
    let long = "é".repeat(128); // 256 bytes
    let names = [
        "{other-tenant}:r:x",
        "*",
        "a?b[c]\\d",
        "100%",
        "cl:{x}:idx",
        " space ",
        "日本語/ключ",
        long.as_str(),
    ];
    for (i, name) in names.iter().enumerate() {
        let r = app
            .reserve_one(name, &format!("{{req}}*{i}"), Some(60))
            .await;
        assert_eq!(r["resource"], *name);
        assert_eq!(app.check_status(name).await, "HELD");
    }
    let listed: Vec<String> = app
        .list_all("")
        .await
        .iter()
        .map(|x| x["resource"].as_str().unwrap_or("").to_string())
        .collect();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "bytewise order, each once");
    let star = app.list_all("prefix=*").await;
    assert_eq!(star.len(), 1, "a glob prefix is literal");
    let by_req = app.list_all("requester=%7Breq%7D*1").await;
    assert_eq!(by_req.len(), 1);
    assert_eq!(by_req[0]["resource"], "*");
}
