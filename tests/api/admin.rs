//! Tenants, keys and the admin API (contract sections 2 and 6).

use crate::every_topology;
use crate::helpers::{TestApp, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::json;

every_topology!(
    key_lifecycle,
    key_limits_follow_the_tier,
    credentials_are_checked,
    admin_tenant_crud,
    deleting_a_tenant_refuses_its_keys_and_frees_its_locks,
    force_release,
);

async fn key_lifecycle(app: TestApp) {
    let created = app
        .admin(
            Method::POST,
            &format!("/tenants/{}/keys", app.tenant_id),
            Some(json!({"label":"worker-prod"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    let key_id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.body["label"], "worker-prod");
    assert!(key.len() >= 32, "at least 128 random bits");

    // The label shows up on what the key reserves.
    app.post_as(
        &key,
        "/api/v1/Reservation/reserve",
        json!([{"requester":"w","resource":"by-label"}]),
    )
    .await;
    let l = app.get("/api/v1/Reservation").await;
    assert_eq!(l.body["reservations"][0]["apiKeyLabel"], "worker-prod");

    let listed = app
        .admin(
            Method::GET,
            &format!("/tenants/{}/keys", app.tenant_id),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let keys = listed.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .all(|k| k.get("key").is_none() && k.get("hash").is_none()));
    assert!(
        !listed.body.to_string().contains(&key),
        "never a secret in a listing"
    );

    let rotated = app
        .admin(
            Method::POST,
            &format!("/tenants/{}/keys/{key_id}/rotate", app.tenant_id),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_eq!(rotated.body["id"], key_id.as_str());
    assert_eq!(rotated.body["label"], "worker-prod");
    let new_key = rotated.body["key"]
        .as_str()
        .expect("new secret")
        .to_string();
    assert_ne!(new_key, key);
    assert_eq!(
        app.get_as(&key, "/api/v1/Reservation").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_as(&new_key, "/api/v1/Reservation").await.status,
        StatusCode::OK
    );

    let deleted = app
        .admin(
            Method::DELETE,
            &format!("/tenants/{}/keys/{key_id}", app.tenant_id),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let refused = app.get_as(&new_key, "/api/v1/Reservation").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_code(), "UNAUTHORIZED");
    let again = app
        .admin(
            Method::DELETE,
            &format!("/tenants/{}/keys/{key_id}", app.tenant_id),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "NOT_FOUND");
}

async fn key_limits_follow_the_tier(app: TestApp) {
    let (tenant, _) =
        crate::helpers::create_tenant(&app.client, &app.address, "small", "free").await;
    let over = app
        .admin(
            Method::POST,
            &format!("/tenants/{tenant}/keys"),
            Some(json!({"label":"second"})),
        )
        .await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(over.error_code(), "KEY_LIMIT_REACHED");

    let up = app
        .admin(
            Method::PATCH,
            &format!("/tenants/{tenant}"),
            Some(json!({"tier":"starter"})),
        )
        .await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.body["tier"], "starter");
    for i in 0..9 {
        let k = app
            .admin(
                Method::POST,
                &format!("/tenants/{tenant}/keys"),
                Some(json!({"label":format!("k{i}")})),
            )
            .await;
        assert_eq!(k.status, StatusCode::CREATED, "key {i}: {k:?}");
    }
    let eleventh = app
        .admin(
            Method::POST,
            &format!("/tenants/{tenant}/keys"),
            Some(json!({"label":"k10"})),
        )
        .await;
    assert_eq!(eleventh.error_code(), "KEY_LIMIT_REACHED");
}

async fn credentials_are_checked(app: TestApp) {
    let none = crate::helpers::send(
        &app.client,
        Method::GET,
        app.url("/api/v1/Reservation"),
        None,
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_code(), "UNAUTHORIZED");
    let wrong = app
        .get_as(
            "ck_0000000000000000000000000000000000000000",
            "/api/v1/Reservation",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let bearer = app
        .client
        .get(app.url("/api/v1/Reservation"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("bearer");
    assert_eq!(bearer.status(), StatusCode::OK);

    // The admin token never opens tenant endpoints, an API key never opens admin.
    let admin_as_key = app.get_as(ADMIN_TOKEN, "/api/v1/Reservation").await;
    assert_eq!(admin_as_key.status, StatusCode::UNAUTHORIZED);
    let key_as_admin = app
        .client
        .get(app.url("/api/v1/admin/tenants"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("admin with key");
    assert_eq!(key_as_admin.status(), StatusCode::UNAUTHORIZED);
    let key_header_admin = app.get_as(&app.api_key, "/api/v1/admin/tenants").await;
    assert_eq!(key_header_admin.status, StatusCode::UNAUTHORIZED);
}

async fn admin_tenant_crud(app: TestApp) {
    let created = app
        .admin(Method::POST, "/tenants", Some(json!({"name":"acme"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let t = &created.body["tenant"];
    assert_eq!(t["name"], "acme");
    assert_eq!(t["tier"], "free", "tier defaults to free");
    assert!(t["jwt"].is_null());
    assert!(t["createdAt"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(created.body["apiKey"]["label"], "default");
    let id = t["id"].as_str().expect("id").to_string();

    let got = app
        .admin(Method::GET, &format!("/tenants/{id}"), None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body, t);

    let listed = app.admin(Method::GET, "/tenants", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.body["tenants"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["id"] == id.as_str())));
    assert!(listed.body.get("nextCursor").is_some());
    let paged = app.admin(Method::GET, "/tenants?limit=1", None).await;
    assert_eq!(paged.body["tenants"].as_array().map(Vec::len), Some(1));
    assert!(paged.body["nextCursor"].is_string());

    let renamed = app
        .admin(
            Method::PATCH,
            &format!("/tenants/{id}"),
            Some(json!({"name":"acme-2","tier":"pro"})),
        )
        .await;
    assert_eq!(renamed.body["name"], "acme-2");
    assert_eq!(renamed.body["tier"], "pro");

    for (method, path, body) in [
        (
            Method::GET,
            "/tenants/00000000-0000-7000-8000-000000000000".to_string(),
            None,
        ),
        (Method::GET, "/tenants/not-an-id".to_string(), None),
        (
            Method::PATCH,
            "/tenants/00000000-0000-7000-8000-000000000000".to_string(),
            Some(json!({"name":"x"})),
        ),
        (
            Method::DELETE,
            "/tenants/00000000-0000-7000-8000-000000000000".to_string(),
            None,
        ),
        (
            Method::GET,
            "/tenants/00000000-0000-7000-8000-000000000000/keys".to_string(),
            None,
        ),
        (
            Method::POST,
            format!("/tenants/{id}/keys/key_0000000000000000/rotate"),
            None,
        ),
    ] {
        let r = app.admin(method.clone(), &path, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}: {r:?}");
        assert_eq!(r.error_code(), "NOT_FOUND");
    }
    for body in [
        json!({"name":"x","tier":"gold"}),
        json!({"name":""}),
        json!({"nme":"x"}),
        json!({}),
    ] {
        let r = app
            .admin(Method::POST, "/tenants", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
    }
    let bad_patch = app
        .admin(
            Method::PATCH,
            &format!("/tenants/{id}"),
            Some(json!({"tier":"platinum"})),
        )
        .await;
    assert_eq!(bad_patch.status, StatusCode::BAD_REQUEST);
    let unchanged = app
        .admin(Method::GET, &format!("/tenants/{id}"), None)
        .await;
    assert_eq!(unchanged.body["tier"], "pro");
}

async fn deleting_a_tenant_refuses_its_keys_and_frees_its_locks(app: TestApp) {
    let (tenant, key) =
        crate::helpers::create_tenant(&app.client, &app.address, "doomed", "pro").await;
    app.post_as(
        &key,
        "/api/v1/Reservation/reserve",
        json!([{"requester":"a","resource":"r1","ttlSeconds":60}]),
    )
    .await;
    let d = app
        .admin(Method::DELETE, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    let refused = app.get_as(&key, "/api/v1/Reservation").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let gone = app
        .admin(Method::GET, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    if let Some(redis) = &app.redis {
        let left = crate::helpers::tenant_keys(redis, &tenant);
        assert!(left.is_empty(), "tenant data left behind: {left:?}");
    }
    // My tenant is untouched.
    assert_eq!(app.get("/api/v1/Reservation").await.status, StatusCode::OK);
}

async fn force_release(app: TestApp) {
    app.reserve_one("a/b", "holder", Some(60)).await;
    app.reserve_one("plain", "holder", None).await;
    let path = format!("/tenants/{}/reservations/a%2Fb", app.tenant_id);
    let r = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(app.check_status("a/b").await, "FREE");
    assert_eq!(app.check_status("plain").await, "HELD");
    let again = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "NOT_FOUND");
    // After a force release the resource is free for anyone, with a higher token.
    let next = app.reserve_one("a/b", "someone-else", None).await;
    assert!(next["fencingToken"].as_u64().is_some());
    assert_eq!(app.list_all("requester=holder").await.len(), 1);
}
