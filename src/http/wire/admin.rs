//! The admin API: tenants, their JWT settings and API keys.

use crate::domain::{
    format_millis, ApiKeyInfo, IssuedKey, KeyLabel, KeyScope, LeasePolicy, Tenant, TenantId,
    TenantName, Tier,
};
use crate::tokens::JwtSettings;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// Default and largest page of `GET /api/v1/admin/tenants`.
pub const DEFAULT_TENANT_LIMIT: u64 = 100;
pub const MAX_TENANT_LIMIT: u64 = 1000;

/// A tenant's JWT settings as the admin API shows them: never the secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtView<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    #[schema(value_type = Vec<crate::tokens::JwtAlg>)]
    pub algorithms: Vec<&'static str>,
    /// Shown as "(set; never shown)" when an HS256 secret is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hs256_secret: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub public_key_pem: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub jwks_url: Option<&'a str>,
}

impl<'a> From<&'a JwtSettings> for JwtView<'a> {
    fn from(j: &'a JwtSettings) -> Self {
        Self {
            issuer: &j.issuer,
            audience: &j.audience,
            algorithms: j.algorithms.iter().map(|a| a.as_str()).collect(),
            hs256_secret: j.hs256_secret.as_ref().map(|_| "(set; never shown)"),
            public_key_pem: j.public_key_pem.as_deref(),
            jwks_url: j.jwks_url.as_deref(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Tenant)]
pub struct TenantView<'a> {
    #[schema(format = "uuid")]
    pub id: &'a str,
    pub name: &'a str,
    pub tier: Tier,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null when the tenant accepts no JWTs.
    #[schema(required = true)]
    pub jwt: Option<JwtView<'a>>,
    /// The lease policy, every field (contract section 17).
    pub policy: &'a LeasePolicy,
}

impl<'a> From<&'a Tenant> for TenantView<'a> {
    fn from(t: &'a Tenant) -> Self {
        Self {
            id: t.id.as_str(),
            name: &t.name,
            tier: t.tier,
            created_at: format_millis(t.created_at),
            jwt: t.jwt.as_ref().map(JwtView::from),
            policy: &t.policy,
        }
    }
}

/// An API key; `key` (the secret) only when it is created or rotated.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKeyView)]
pub struct KeyView<'a> {
    #[schema(pattern = "^key_[0-9a-f]{16}$")]
    pub id: &'a str,
    pub label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<&'a str>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub scope: KeyScope,
}

impl<'a> KeyView<'a> {
    pub fn info(k: &'a ApiKeyInfo) -> Self {
        Self {
            id: k.id.as_str(),
            label: &k.label,
            key: None,
            created_at: format_millis(k.created_at),
            scope: k.scope,
        }
    }

    pub fn issued(k: &'a IssuedKey) -> Self {
        Self {
            key: Some(&k.secret),
            ..Self::info(&k.info)
        }
    }
}

#[derive(ToSchema)]
pub struct TenantCreate {
    pub name: TenantName,
    /// Default free.
    pub tier: Option<Tier>,
}

/// Fields left out stay as they are; `"jwt": null` removes the JWT settings.
#[derive(ToSchema)]
pub struct TenantPatch {
    pub name: Option<TenantName>,
    pub tier: Option<Tier>,
    #[schema(value_type = Option<JwtSettings>)]
    pub jwt: Option<Option<JwtSettings>>,
    /// Fields left out stay as they are; `"policy": null` puts every field
    /// back to its default.
    #[schema(value_type = Option<LeasePolicyPatch>)]
    pub policy: Option<crate::domain::policy::PolicyPatch>,
}

/// A change to a tenant's lease policy: fields left out stay as they are.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LeasePolicyPatch {
    /// 1 to 31536000, or null for none.
    #[schema(rename = "maxTtlSeconds", minimum = 1, maximum = 31536000)]
    pub max_ttl_seconds: Option<Option<u64>>,
    #[schema(rename = "requireTtl")]
    pub require_ttl: Option<bool>,
    /// 1 to 31536000, or null for none.
    #[schema(rename = "maxHoldSeconds", minimum = 1, maximum = 31536000)]
    pub max_hold_seconds: Option<Option<u64>>,
    #[schema(rename = "lockDelaySeconds", minimum = 0, maximum = 60)]
    pub lock_delay_seconds: Option<u64>,
    #[schema(rename = "maxWaitSeconds", minimum = 1, maximum = 300)]
    pub max_wait_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList<'a> {
    pub tenants: Vec<TenantView<'a>>,
    /// Null on the last page.
    #[schema(format = "uuid", required = true)]
    pub next_cursor: Option<String>,
}

/// The query of `GET /api/v1/admin/tenants`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListParams {
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
    /// nextCursor of the previous page
    pub cursor: Option<TenantId>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreated<'a> {
    pub tenant: TenantView<'a>,
    pub api_key: KeyView<'a>,
}

#[derive(ToSchema)]
pub struct KeyCreate {
    pub label: KeyLabel,
    /// Default write. Anything but "read" or "write" (null included) is a 400.
    #[schema(nullable = false)]
    pub scope: Option<KeyScope>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList<'a> {
    pub keys: Vec<KeyView<'a>>,
}
