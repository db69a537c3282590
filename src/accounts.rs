//! The account operations — tenants and their API keys — that the admin API
//! and the dashboard share: each one changes the store and then, where the
//! change can make a cached credential stale (a rotated or revoked key, a
//! changed or deleted tenant), drops the tenant from this instance's
//! authentication cache at once. The fleet's other instances hear of it through
//! the store's invalidation feed; this instance must not wait for the pub/sub
//! round trip, so no caller changes these records except through here.

use crate::auth::Authenticator;
use crate::domain::{IssuedKey, KeyId, KeyScope, Tenant, TenantId, TenantName, Tier};
use crate::store::{KeyCreateError, Store, StoreError, StoreResult, TenantPatch};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;

/// The account operations over the store and this instance's credential cache.
pub struct Accounts {
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
}

/// The tenant a dashboard sign-in lands in.
#[derive(Debug)]
pub struct SignedIn {
    pub tenant: TenantId,
    /// The default key, when this sign-in created the tenant (shown once).
    pub new_key: Option<IssuedKey>,
}

/// Why a dashboard sign-in found no tenant.
#[derive(Debug)]
pub enum SignInError {
    /// Neither the display name nor the tenant id is a valid tenant name.
    NoUsableName,
    Store(StoreError),
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, auth: Arc<Authenticator>) -> Self {
        Self { store, auth }
    }

    /// Creates a tenant with its default key (nothing cached can know it yet).
    pub async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
    ) -> StoreResult<(Tenant, IssuedKey)> {
        self.store.create_tenant(name, tier, None).await
    }

    /// Changes a tenant's name, tier or JWT settings; `None` when unknown.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
    ) -> StoreResult<Option<Tenant>> {
        self.then_forget(id, self.store.update_tenant(id, patch), Option::is_some)
            .await
    }

    /// Deletes a tenant, its keys and its reservations; `false` when unknown.
    pub async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool> {
        self.then_forget(id, self.store.delete_tenant(id), |deleted| *deleted)
            .await
    }

    /// Creates a key of `scope` (a new key is in no cache, so nothing is
    /// forgotten).
    pub async fn create_key(
        &self,
        tenant: &TenantId,
        label: &str,
        scope: KeyScope,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        self.store.create_key(tenant, label, scope).await
    }

    /// Gives a key a new secret; `None` when the tenant has no such key.
    pub async fn rotate_key(
        &self,
        tenant: &TenantId,
        key: &KeyId,
    ) -> StoreResult<Option<IssuedKey>> {
        self.then_forget(tenant, self.store.rotate_key(tenant, key), Option::is_some)
            .await
    }

    /// Revokes a key; `false` when the tenant has no such key.
    pub async fn revoke_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<bool> {
        self.then_forget(tenant, self.store.delete_key(tenant, key), |revoked| {
            *revoked
        })
        .await
    }

    /// Runs `change`, then drops the tenant's cached credentials on this
    /// instance when `changed` says it changed something: the one place the
    /// account operations reach the cache.
    async fn then_forget<T>(
        &self,
        tenant: &TenantId,
        change: impl Future<Output = StoreResult<T>>,
        changed: impl FnOnce(&T) -> bool,
    ) -> StoreResult<T> {
        let outcome = change.await?;
        if changed(&outcome) {
            self.auth.forget_tenant(tenant);
        }
        Ok(outcome)
    }

    /// The tenant of an identity signing in to the dashboard: a fixed id
    /// derived from (issuer, subject). On the identity's first sign-in it is
    /// created on the free tier — named `display` when that is a valid name,
    /// else by its id — with a default key, returned to be shown once.
    pub async fn sign_in(
        &self,
        issuer: &str,
        subject: &str,
        display: &str,
    ) -> Result<SignedIn, SignInError> {
        let tenant = identity_tenant(issuer, subject);
        if self
            .store
            .get_tenant(&tenant)
            .await
            .map_err(SignInError::Store)?
            .is_some()
        {
            return Ok(SignedIn {
                tenant,
                new_key: None,
            });
        }
        // The tenant id is a UUID, always a valid name.
        let name = TenantName::parse(display.to_string())
            .or_else(|_| TenantName::parse(tenant.as_str().to_string()))
            .map_err(|_| SignInError::NoUsableName)?;
        let sign_up_failed = |e: StoreError| {
            tracing::warn!(error = %e, "dashboard sign-up failed");
            SignInError::Store(e)
        };
        self.store
            .ensure_tenant(&tenant, &name, Tier::Free)
            .await
            .map_err(sign_up_failed)?;
        let new_key = match self
            .store
            .create_key(&tenant, "default", KeyScope::Write)
            .await
            .map_err(sign_up_failed)?
        {
            Ok(k) => {
                tracing::info!(%tenant, "dashboard sign-up: tenant and default key created");
                Some(k)
            }
            // A concurrent first sign-in made it: the key is on the keys page.
            Err(_) => None,
        };
        Ok(SignedIn { tenant, new_key })
    }
}

/// The tenant of an OIDC identity: a fixed id derived from (issuer, subject).
fn identity_tenant(issuer: &str, subject: &str) -> TenantId {
    let digest = Sha256::digest(format!("oidc\n{issuer}\n{subject}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    TenantId::parse(&id.hyphenated().to_string()).unwrap_or_else(|_| TenantId::generate())
}
