//! The command line: [`Cli`], the settings (every one a flag and an
//! environment variable, see [`crate::config`]) and a subcommand, parsed by
//! [`parse_or_exit`]; and the subcommands that do not serve.
//!
//! `cooplocker admin ...` is the admin API from the command line. It talks to a
//! running server (`--server`, default `http://127.0.0.1:8080`) with the admin
//! token, so it works the same against the embedded mode and a fleet, and goes
//! through exactly the validation the HTTP API applies.

use crate::config::Settings;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

/// The whole command line: the settings and, optionally, a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "cooplocker",
    version,
    about = "Multi-tenant distributed locks and resource reservations over HTTP",
    long_about = "Multi-tenant distributed locks and resource reservations over HTTP.\n\n\
                  With no subcommand, runs the server (same as `cooplocker serve`). Without \
                  REDIS_URL it runs one instance on an embedded in-process store."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; none means serve.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Administer tenants and keys through a running server's admin API.
    Admin(AdminArgs),
    /// Exit 0 if the server on this machine's COOPLOCKER_LISTEN port answers
    /// GET /healthz, 1 otherwise (for container health checks).
    Healthcheck,
    /// Print the OpenAPI document of the API (as served at
    /// /api/v1/openapi.json) and exit.
    Openapi,
    /// Run a command while holding a lock: wait for RESOURCE, run COMMAND
    /// with COOPLOCKER_RESOURCE and COOPLOCKER_FENCING_TOKEN set, renew the
    /// lease while it runs, release it when it exits. Exits with COMMAND's
    /// status; 75 if the lock was not acquired within --wait, 76 if the lease
    /// was lost, 2 on errors. The API key comes from COOPLOCKER_API_KEY (or
    /// --key-file).
    Lock(crate::lock::LockArgs),
}

/// Parses the command line and environment; on a bad value prints one line
/// naming the setting (flag and environment variable) and exits with status 2.
pub fn parse_or_exit() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let arg = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            let env = Cli::command()
                .get_arguments()
                .find(|a| {
                    a.get_long()
                        .is_some_and(|l| arg.starts_with(&format!("--{l}")))
                })
                .and_then(|a| a.get_env().map(|v| v.to_string_lossy().into_owned()));
            let first = e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid configuration")
                .trim_start_matches("error: ")
                .to_string();
            match env {
                Some(env) => eprintln!("cooplocker: invalid setting {env} / {first}"),
                None => eprintln!("cooplocker: {first} (see --help)"),
            }
            std::process::exit(2);
        }
    }
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of a running cooplocker instance.
    #[arg(
        long,
        env = "COOPLOCKER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// API keys of a tenant.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Force-release a reservation of a tenant.
    Release { tenant: String, resource: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints it with its default API key (shown only once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tier: Option<String>,
    },
    /// List tenants.
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one tenant.
    Get { id: String },
    /// Change a tenant's name, tier and/or lease policy (contract section 17;
    /// the policy applies fleet-wide from the next request).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Delete a tenant, its keys and its reservations.
    Delete { id: String },
    /// Set (or with --clear remove) how the tenant's own JWTs are verified for
    /// exchange at POST /api/v1/auth/token. Give exactly one key source.
    Jwt(JwtArgs),
}

/// The lease policy flags of `tenants update`; the server checks the values.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The largest ttlSeconds a request may ask (1-31536000, or `none`).
    #[arg(long, value_name = "SECONDS|none")]
    pub max_ttl: Option<String>,
    /// Whether every reserve item needs a ttlSeconds (`true` or `false`).
    #[arg(long, value_name = "true|false")]
    pub require_ttl: Option<bool>,
    /// No hold lasts past reservedAt + this (1-31536000, or `none`).
    #[arg(long, value_name = "SECONDS|none")]
    pub max_hold: Option<String>,
    /// After EXPIRED or FORCE_RELEASED the resource takes no new holder for
    /// this long (0-60; 0: none).
    #[arg(long, value_name = "SECONDS")]
    pub lock_delay: Option<u64>,
    /// The longest waitSeconds a request may ask (1-300).
    #[arg(long, value_name = "SECONDS")]
    pub max_wait: Option<u64>,
    /// Put every policy field back to its default (alone, without the other
    /// policy flags).
    #[arg(long)]
    pub reset_policy: bool,
}

/// The `policy` value of a tenant PATCH from the command line, if any flag
/// sets one: `none` is null, a number a number, anything else is sent as it
/// is for the server to refuse with its reason.
fn policy_body(args: &PolicyArgs) -> Option<serde_json::Value> {
    use serde_json::{json, Value};
    let secs = |v: &str| match v {
        "none" | "null" => Value::Null,
        _ => v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)),
    };
    let mut p = serde_json::Map::new();
    if let Some(v) = &args.max_ttl {
        p.insert("maxTtlSeconds".into(), secs(v));
    }
    if let Some(v) = args.require_ttl {
        p.insert("requireTtl".into(), json!(v));
    }
    if let Some(v) = &args.max_hold {
        p.insert("maxHoldSeconds".into(), secs(v));
    }
    if let Some(v) = args.lock_delay {
        p.insert("lockDelaySeconds".into(), json!(v));
    }
    if let Some(v) = args.max_wait {
        p.insert("maxWaitSeconds".into(), json!(v));
    }
    if args.reset_policy && p.is_empty() {
        return Some(Value::Null);
    }
    (!p.is_empty()).then_some(Value::Object(p))
}

#[derive(Debug, Args)]
pub struct JwtArgs {
    pub id: String,
    /// Remove the settings (every token exchanged under them stops working).
    #[arg(long, conflicts_with_all = ["issuer", "audience", "algorithms", "hs256_secret_file", "public_key_file", "jwks_url"])]
    pub clear: bool,
    /// The `iss` the JWTs must carry.
    #[arg(long, required_unless_present = "clear")]
    pub issuer: Option<String>,
    /// The `aud` the JWTs must carry.
    #[arg(long, required_unless_present = "clear")]
    pub audience: Option<String>,
    /// Accepted algorithms, comma-separated (HS256, RS256, ES256); by default
    /// the ones the key allows.
    #[arg(long, value_delimiter = ',')]
    pub algorithms: Vec<String>,
    /// File holding the HS256 secret (at least 32 bytes; `-` reads stdin). A
    /// file rather than an argument, so the secret never shows in `ps`.
    #[arg(long, group = "key")]
    pub hs256_secret_file: Option<std::path::PathBuf>,
    /// PEM file of the RS256 or ES256 public key.
    #[arg(long, group = "key")]
    pub public_key_file: Option<std::path::PathBuf>,
    /// URL of the JWKS to fetch keys from (https).
    #[arg(long, group = "key")]
    pub jwks_url: Option<String>,
}

/// Reads a file given on the command line (`-` for stdin).
fn read_arg_file(path: &std::path::Path) -> Result<String, String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    text.map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The `jwt` value of a tenant PATCH from the command line.
fn jwt_body(args: &JwtArgs) -> Result<serde_json::Value, String> {
    use serde_json::json;
    if args.clear {
        return Ok(serde_json::Value::Null);
    }
    let mut v = json!({"issuer": args.issuer, "audience": args.audience});
    if !args.algorithms.is_empty() {
        v["algorithms"] = json!(args.algorithms);
    }
    if let Some(p) = &args.hs256_secret_file {
        v["hs256Secret"] = json!(read_arg_file(p)?.trim_end_matches(['\n', '\r']));
    } else if let Some(p) = &args.public_key_file {
        v["publicKeyPem"] = json!(read_arg_file(p)?);
    } else if let Some(u) = &args.jwks_url {
        v["jwksUrl"] = json!(u);
    } else {
        return Err(
            "give one of --hs256-secret-file, --public-key-file, --jwks-url (or --clear)".into(),
        );
    }
    Ok(v)
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key (the secret is shown only once).
    Create {
        tenant: String,
        #[arg(long)]
        label: String,
        /// What the key may do: write (every tenant route, the default) or
        /// read (check, list, validate and the event stream only).
        #[arg(long, value_parser = ["read", "write"])]
        scope: Option<String>,
    },
    /// List a tenant's keys with their scopes (never secrets).
    List { tenant: String },
    /// Give a key a new secret; the old one stops working fleet-wide.
    Rotate { tenant: String, key: String },
    /// Revoke a key.
    Delete { tenant: String, key: String },
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn run(settings: &Settings, args: AdminArgs) -> ExitCode {
    let Some(token) = settings.admin_token.as_deref() else {
        eprintln!("cooplocker admin: set COOPLOCKER_ADMIN_TOKEN (or --admin-token)");
        return ExitCode::from(2);
    };
    if !args.server.starts_with("http://") {
        eprintln!(
            "cooplocker admin: --server must be an http:// URL of an instance (the CLI speaks plain \
             HTTP; run it next to an instance, e.g. with kubectl exec, or through a port-forward)"
        );
        return ExitCode::from(2);
    }
    use reqwest::Method;
    use serde_json::json;
    let base = format!("{}/api/v1/admin", args.server.trim_end_matches('/'));
    let (method, path, body) = match args.command {
        AdminCommand::Tenants(t) => match t {
            TenantCommand::Create { name, tier } => {
                let mut b = json!({"name": name});
                if let Some(tier) = tier {
                    b["tier"] = json!(tier);
                }
                (Method::POST, "/tenants".to_string(), Some(b))
            }
            TenantCommand::List { limit, cursor } => {
                let mut q = vec![];
                if let Some(l) = limit {
                    q.push(format!("limit={l}"));
                }
                if let Some(c) = cursor {
                    q.push(format!("cursor={}", seg(&c)));
                }
                let q = if q.is_empty() {
                    String::new()
                } else {
                    format!("?{}", q.join("&"))
                };
                (Method::GET, format!("/tenants{q}"), None)
            }
            TenantCommand::Get { id } => (Method::GET, format!("/tenants/{}", seg(&id)), None),
            TenantCommand::Update {
                id,
                name,
                tier,
                policy,
            } => {
                let mut b = json!({});
                if let Some(n) = name {
                    b["name"] = json!(n);
                }
                if let Some(t) = tier {
                    b["tier"] = json!(t);
                }
                if policy.reset_policy && policy_body(&policy) != Some(serde_json::Value::Null) {
                    // Reset, then the flags: two changes in one request are
                    // not expressible, so reset first.
                    eprintln!("cooplocker admin: --reset-policy goes alone; run it first, then set fields");
                    return ExitCode::from(2);
                }
                if let Some(p) = policy_body(&policy) {
                    b["policy"] = p;
                }
                (Method::PATCH, format!("/tenants/{}", seg(&id)), Some(b))
            }
            TenantCommand::Delete { id } => {
                (Method::DELETE, format!("/tenants/{}", seg(&id)), None)
            }
            TenantCommand::Jwt(args) => match jwt_body(&args) {
                Ok(jwt) => (
                    Method::PATCH,
                    format!("/tenants/{}", seg(&args.id)),
                    Some(json!({ "jwt": jwt })),
                ),
                Err(e) => {
                    eprintln!("cooplocker admin: {e}");
                    return ExitCode::from(2);
                }
            },
        },
        AdminCommand::Keys(k) => match k {
            KeyCommand::Create {
                tenant,
                label,
                scope,
            } => {
                let mut b = json!({"label": label});
                if let Some(scope) = scope {
                    b["scope"] = json!(scope);
                }
                (
                    Method::POST,
                    format!("/tenants/{}/keys", seg(&tenant)),
                    Some(b),
                )
            }
            KeyCommand::List { tenant } => {
                (Method::GET, format!("/tenants/{}/keys", seg(&tenant)), None)
            }
            KeyCommand::Rotate { tenant, key } => (
                Method::POST,
                format!("/tenants/{}/keys/{}/rotate", seg(&tenant), seg(&key)),
                None,
            ),
            KeyCommand::Delete { tenant, key } => (
                Method::DELETE,
                format!("/tenants/{}/keys/{}", seg(&tenant), seg(&key)),
                None,
            ),
        },
        AdminCommand::Release { tenant, resource } => (
            Method::DELETE,
            format!("/tenants/{}/reservations/{}", seg(&tenant), seg(&resource)),
            None,
        ),
    };
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cooplocker admin: cannot reach {}: {e}", args.server);
            return ExitCode::from(1);
        }
    };
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        if !pretty.is_empty() {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{pretty}");
        }
        ExitCode::SUCCESS
    } else {
        eprintln!("cooplocker admin: {status}\n{pretty}");
        ExitCode::from(1)
    }
}

/// `cooplocker healthcheck`: GET /healthz on the local listener, for container
/// health checks (the runtime image has no curl).
pub async fn healthcheck(settings: &Settings) -> ExitCode {
    let port = settings.listen.port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build();
    let ok = match client {
        Ok(c) => c
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("cooplocker healthcheck: {url} did not answer 200");
        ExitCode::from(1)
    }
}
