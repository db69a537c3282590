//! The dashboard's pages (maud templates, compiled in) and its two assets.

use super::{data, Session};
use crate::domain::{format_millis, ApiKeyInfo, Holding, Tenant};
use crate::events::Event;
use maud::{html, Markup, DOCTYPE};
use std::collections::BTreeMap;

pub const SCRIPT: &str = include_str!("app.js");
pub const STYLE: &str = include_str!("style.css");

fn layout(title: &str, session: Option<&Session>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cooplocker" }
                link rel="stylesheet" href="/dashboard/assets/style.css";
                script src="/dashboard/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/dashboard" { "cooplocker" }
                    @if let Some(s) = session {
                        nav aria-label="Dashboard" {
                            @for (href, name) in [("/dashboard/keys", "Keys"), ("/dashboard/reservations", "Reservations"), ("/dashboard/events", "Events"), ("/dashboard/plan", "Plan")] {
                                @if name == active {
                                    a href=(href) aria-current="page" { (name) }
                                } @else {
                                    a href=(href) { (name) }
                                }
                            }
                        }
                        form.signout method="post" action="/dashboard/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.who) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    }
}

pub fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        None,
        "",
        html! { p { (text) } p { a href="/dashboard/login" { "Back to sign-in" } } },
    )
}

pub fn login(oidc: bool, local: bool, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        "",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if oidc {
                p { a.button href="/dashboard/login/start" id="oidc-signin" { "Sign in with your identity provider" } }
                p.hint { "First time? Signing in creates your account and shows your API key at once." }
            }
            @if local {
                form method="post" action="/dashboard/login/local" {
                    label for="token" { "Admin token (local sign-in to the embedded default tenant)" }
                    input id="token" name="token" type="password" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
            }
            @if !oidc && !local {
                p { "No sign-in is configured: set COOPLOCKER_OIDC_ISSUER, COOPLOCKER_OIDC_CLIENT_ID and COOPLOCKER_OIDC_CLIENT_SECRET." }
            }
        },
    )
}

pub fn secret_shown(s: &Session, title: &str, label: &str, secret: &str, welcome: bool) -> Markup {
    layout(
        title,
        Some(s),
        "Keys",
        html! {
            @if welcome { p { "Your account is ready. This is your API key:" } }
            p { "Key " strong { (label) } ". Copy it now: it is shown only once." }
            p { code #secret.secret { (secret) } }
            p { "Send it in the " code { "X-Api-Key" } " header of every API request." }
            p { a.button href="/dashboard/keys" { "Done" } }
        },
    )
}

pub fn keys(s: &Session, tenant: &Tenant, keys: &[ApiKeyInfo], error: Option<&str>) -> Markup {
    let limit = tenant.tier.key_limit();
    layout(
        "API keys",
        Some(s),
        "Keys",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            table {
                caption { (keys.len()) " key(s)" @if let Some(l) = limit { " of " (l) " allowed on the " (tenant.tier.as_str()) " plan" } }
                thead { tr { th scope="col" { "Label" } th scope="col" { "Id" } th scope="col" { "Scope" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
                tbody {
                    @for k in keys {
                        tr data-key=(k.id.as_str()) {
                            td { (k.label) }
                            td { code { (k.id.as_str()) } }
                            td.scope { (k.scope.as_str()) }
                            td { time datetime=(format_millis(k.created_at)) { (format_millis(k.created_at)) } }
                            td.actions {
                                form method="post" action={ "/dashboard/keys/" (k.id.as_str()) "/rotate" } {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button type="submit" aria-label={ "Rotate " (k.label) } { "Rotate" }
                                }
                                form method="post" action={ "/dashboard/keys/" (k.id.as_str()) "/revoke" } {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button.danger type="submit" aria-label={ "Revoke " (k.label) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New key" }
            form method="post" action="/dashboard/keys" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="label" { "Label" }
                input id="label" name="label" required maxlength="256" placeholder="worker-prod";
                label for="scope" { "Scope" }
                select id="scope" name="scope" {
                    option value="write" selected { "write (every API route)" }
                    option value="read" { "read (check, list, validate, events)" }
                }
                button type="submit" { "Create key" }
            }
        },
    )
}

/// The live-status line of the live pages: the script sets its text and its
/// `data-state` (`connecting`, `live`, `reconnecting`).
fn live_status() -> Markup {
    html! { span #live-status role="status" data-state="connecting" { "Connecting to live updates…" } }
}

/// One hold's kind: `exclusive`, `shared`, or `semaphore 2/3` (permits used
/// of its limit).
pub fn kind_text(h: &Holding, line: Option<&data::Line>) -> String {
    match h.kind.limit() {
        Some(limit) => format!("semaphore {}/{limit}", line.map_or(1, |l| l.holders.max(1))),
        None => h.kind.mode().to_string(),
    }
}

/// The reservations page: filters, one page of holds (the script re-reads it
/// from `/dashboard/data/reservations` and keeps it live), and the pager.
pub fn reservations(
    s: &Session,
    q: &data::PageQuery,
    items: &[Holding],
    lines: &BTreeMap<String, data::Line>,
    next: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let limit = data::page_limit(q.limit.as_deref()).unwrap_or(data::PAGE_DEFAULT);
    layout(
        "Reservations",
        Some(s),
        "Reservations",
        html! {
            p.hint { (live_status()) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form #filters method="get" action="/dashboard/reservations" {
                label for="f-prefix" { "Resource prefix" }
                input #f-prefix name="prefix" value=(text(&q.prefix)) maxlength="256" autocomplete="off";
                label for="f-requester" { "Requester" }
                input #f-requester name="requester" value=(text(&q.requester)) maxlength="256" autocomplete="off";
                label for="f-limit" { "Per page" }
                select #f-limit name="limit" {
                    @for n in [25, 50, 100, 200, 500] {
                        option value=(n) selected[n == limit] { (n) }
                    }
                }
                button type="submit" { "Filter" }
            }
            p.sorting {
                "Sort this page by "
                @for (key, name) in [("resource", "resource"), ("requester", "requester"), ("left", "time left"), ("waiting", "waiters")] {
                    button.sort type="button" data-sort=(key) aria-pressed=(if key == "resource" { "true" } else { "false" }) { (name) }
                }
            }
            table #reservations data-csrf=(s.csrf) {
                caption #page-info { (items.len()) " hold(s) on this page" @if next.is_some() { ", more on the next" } }
                thead { tr {
                    th scope="col" { "Resource" } th scope="col" { "Requester" } th scope="col" { "Key" }
                    th scope="col" { "Kind" } th scope="col" { "Fencing token" } th scope="col" { "Time left" }
                    th scope="col" { "Waiting" } th scope="col" { "Hold deadline" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for h in items {
                        @let line = lines.get(h.resource.as_str());
                        tr data-resource=(h.resource.as_str()) {
                            td { (h.resource.as_str()) }
                            td { (h.requester) }
                            td { (h.api_key_label) }
                            td.kind { (kind_text(h, line)) }
                            td { (h.fencing_token) }
                            td.left { @match h.expires_at { Some(e) => { "until " (format_millis(e)) }, None => "no expiry" } }
                            td.waiting { (line.map_or(0, |l| l.queue_length)) }
                            td.deadline { }
                            td {
                                form method="post" action="/dashboard/reservations/release" {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    input type="hidden" name="resource" value=(h.resource.as_str());
                                    button.danger type="submit" aria-label={ "Force release " (h.resource.as_str()) } { "Force release" }
                                }
                            }
                        }
                    }
                }
            }
            p #empty hidden[!items.is_empty()] { "No active reservations." }
            p #clock-note.hint {}
            nav.pager aria-label="Pages of reservations" {
                button #page-first type="button" disabled { "First page" }
                button #page-prev type="button" disabled { "Previous page" }
                button #page-next type="button" disabled[next.is_none()] data-cursor=[next] { "Next page" }
            }
        },
    )
}

pub fn events(s: &Session, events: &[Event]) -> Markup {
    layout(
        "Events",
        Some(s),
        "Events",
        html! {
            p.hint { (live_status()) }
            section #activity aria-labelledby="activity-title" {
                h2 #activity-title { "Activity, last 15 minutes" }
                p.hint { "Events per second by type, in 10-second steps, by the store's clock." }
                div #chart {}
                table #activity-table {
                    caption { "The chart in numbers" }
                    thead { tr { th scope="col" { "Type" } th scope="col" { "Events (15 min)" } th scope="col" { "Last minute" } th scope="col" { "Peak per second" } } }
                    tbody {}
                }
                h2 { "Most contended resources" }
                p.hint { "Longest line of waiters now first, then most waits that timed out and most waits (the store's contention counters, last hour), then most expiries and force releases and most holds (the last 15 minutes' events)." }
                table #contended {
                    thead { tr {
                        th scope="col" { "Resource" } th scope="col" { "Waiting now" } th scope="col" { "Waits" } th scope="col" { "Timed out" }
                        th scope="col" { "Holds" } th scope="col" { "Expired" } th scope="col" { "Force released" }
                    } }
                    tbody {}
                }
            }
            h2 { "Recent events" }
            p.hint { "Newest first." }
            table #events {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Type" } th scope="col" { "Resource" } th scope="col" { "Requester" } th scope="col" { "apiKeyLabel" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (format_millis(e.at)) }
                            td { (e.kind.as_str()) }
                            td { (e.resource) }
                            td { (e.requester) }
                            td { (e.label) }
                        }
                    }
                }
            }
        },
    )
}

/// What the plan page shows before the script's first live reading.
pub struct Usage {
    pub keys: usize,
    pub active: usize,
    pub writes: u32,
    pub waiter_limit: usize,
}

/// A policy field's value as the page shows it: null is "none".
fn policy_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "none".into(),
        serde_json::Value::Bool(true) => "yes".into(),
        serde_json::Value::Bool(false) => "no".into(),
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    }
}

/// The policy fields in the contract's order, then any others it has.
pub fn policy_rows(policy: &serde_json::Value) -> Vec<(String, String)> {
    const KNOWN: [(&str, &str); 5] = [
        ("maxTtlSeconds", "Longest TTL (s)"),
        ("requireTtl", "TTL required"),
        ("maxHoldSeconds", "Longest hold (s)"),
        ("lockDelaySeconds", "Lock delay after expiry (s)"),
        ("maxWaitSeconds", "Longest wait (s)"),
    ];
    let Some(fields) = policy.as_object() else {
        return Vec::new();
    };
    let mut rows: Vec<(String, String)> = KNOWN
        .iter()
        .filter_map(|(k, name)| fields.get(*k).map(|v| (name.to_string(), policy_value(v))))
        .collect();
    for (k, v) in fields {
        if !KNOWN.iter().any(|(known, _)| known == k) {
            rows.push((k.clone(), policy_value(v)));
        }
    }
    rows
}

pub fn plan(
    s: &Session,
    tenant: &Tenant,
    usage: &Usage,
    policy: Option<&serde_json::Value>,
) -> Markup {
    let key_limit = tenant.tier.key_limit();
    layout(
        "Plan",
        Some(s),
        "Plan",
        html! {
            dl {
                dt { "Tenant" } dd { (tenant.name) " (" code { (tenant.id.as_str()) } ")" }
                dt { "Plan" } dd #tier { (tenant.tier.as_str()) }
                dt { "Write requests" } dd { (usage.writes) " per second (reserve, unreserve, extend)" }
                dt { "Read requests" } dd { (u64::from(usage.writes) * 5) " per second (check, list, events)" }
            }
            h2 { "Usage now" }
            p.hint { (live_status()) " Read every 5 seconds; each reading counts as one read request." }
            table #usage {
                thead { tr { th scope="col" { "What" } th scope="col" { "Now" } th scope="col" { "Limit" } th scope="col" { span.visually-hidden { "Share of the limit" } } } }
                tbody {
                    tr #u-reads { th scope="row" { "Read requests left this second" } td.used { "…" } td.limit { (u64::from(usage.writes) * 5) } td.share {} }
                    tr #u-waiters { th scope="row" { "Requests waiting in line" } td.used { "…" } td.limit { (usage.waiter_limit) } td.share {} }
                    tr #u-keys { th scope="row" { "API keys" } td.used { (usage.keys) } td.limit { @match key_limit { Some(l) => (l), None => "unlimited" } } td.share {} }
                    tr #u-active { th scope="row" { "Active reservations" } td.used #active { (usage.active) } td.limit { "no limit" } td.share {} }
                }
            }
            h2 { "Lease policy" }
            @match policy {
                Some(p) if p.is_object() => {
                    dl #policy {
                        @for (name, value) in policy_rows(p) { dt { (name) } dd { (value) } }
                    }
                }
                _ => { p #policy.hint { "No lease policy: the service's defaults apply." } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rows_show_null_as_none_and_keep_unknown_fields() {
        let p = serde_json::json!({
            "maxWaitSeconds": 60, "maxTtlSeconds": null, "requireTtl": true, "later": 3
        });
        assert_eq!(
            policy_rows(&p),
            [
                ("Longest TTL (s)".to_string(), "none".to_string()),
                ("TTL required".into(), "yes".into()),
                ("Longest wait (s)".into(), "60".into()),
                ("later".into(), "3".into()),
            ]
        );
        assert!(policy_rows(&serde_json::Value::Null).is_empty());
    }
}
