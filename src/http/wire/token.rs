//! `POST /api/v1/auth/token`: the JWT exchange.

use crate::domain::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(ToSchema)]
pub struct TokenRequest {
    /// The tenant's own JWT (at most 8 KiB).
    #[schema(min_length = 1, max_length = 8192)]
    pub jwt: String,
    /// Optional: otherwise the JWT's `iss` selects the tenant.
    pub tenant: Option<TenantId>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse<'a> {
    /// Send it in X-Api-Key (or Authorization: Bearer).
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = "uuid")]
    pub tenant: &'a str,
    /// The JWT's `sub`.
    pub subject: String,
}
