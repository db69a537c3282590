//! The dashboard's pages (maud templates, compiled in) and its two assets.

use super::Session;
use crate::domain::{format_millis, ApiKeyInfo, Holding, Tenant};
use crate::events::Event;
use maud::{html, Markup, DOCTYPE};

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

pub fn reservations(s: &Session, items: &[Holding]) -> Markup {
    layout(
        "Reservations",
        Some(s),
        "Reservations",
        html! {
            p.hint { "Updates live. " span #live-status role="status" { "connecting…" } }
            table #reservations data-csrf=(s.csrf) {
                thead { tr { th scope="col" { "Resource" } th scope="col" { "Requester" } th scope="col" { "Key" } th scope="col" { "Fencing token" } th scope="col" { "Expires" } th scope="col" { "" } } }
                tbody {
                    @for h in items {
                        tr data-resource=(h.resource.as_str()) {
                            td { (h.resource.as_str()) }
                            td { (h.requester) }
                            td { (h.api_key_label) }
                            td { (h.fencing_token) }
                            td { @match h.expires_at { Some(e) => (format_millis(e)), None => "never" } }
                            td {
                                form method="post" action="/dashboard/reservations/release" {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    input type="hidden" name="resource" value=(h.resource.as_str());
                                    button.danger type="submit" { "Force release" }
                                }
                            }
                        }
                    }
                }
            }
            p #empty hidden[!items.is_empty()] { "No active reservations." }
        },
    )
}

pub fn events(s: &Session, events: &[Event]) -> Markup {
    layout(
        "Events",
        Some(s),
        "Events",
        html! {
            p.hint { "Newest first; new events appear live. " span #live-status role="status" { "connecting…" } }
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

pub fn plan(s: &Session, tenant: &Tenant, keys: usize, active: usize, writes: u32) -> Markup {
    layout(
        "Plan",
        Some(s),
        "Plan",
        html! {
            dl {
                dt { "Tenant" } dd { (tenant.name) " (" code { (tenant.id.as_str()) } ")" }
                dt { "Plan" } dd #tier { (tenant.tier.as_str()) }
                dt { "API keys" } dd { (keys) " of " @match tenant.tier.key_limit() { Some(l) => (l), None => "unlimited" } }
                dt { "Write requests" } dd { (writes) " per second (reserve, unreserve, extend)" }
                dt { "Read requests" } dd { (u64::from(writes) * 5) " per second (check, list, events)" }
                dt { "Active reservations" } dd #active { (active) }
            }
        },
    )
}
