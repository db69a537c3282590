//! Tenants, API keys and authentication, in process.

use super::*;

#[async_trait]
impl Accounts for EmbeddedStore {
    async fn ensure_tenant(&self, id: &TenantId, name: &TenantName, tier: Tier) -> StoreResult<()> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        st.tenants.entry(id.clone()).or_insert_with(|| {
            TenantState::new(Tenant {
                id: id.clone(),
                name: name.as_str().to_string(),
                tier,
                created_at: now_ms,
                jwt: None,
                policy: crate::domain::LeasePolicy::default(),
            })
        });
        Ok(())
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
        secret: Option<String>,
    ) -> StoreResult<(Tenant, IssuedKey)> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let tenant = Tenant {
            id: TenantId::generate(),
            name: name.as_str().to_string(),
            tier,
            created_at: now_ms,
            jwt: None,
            policy: crate::domain::LeasePolicy::default(),
        };
        st.tenants
            .insert(tenant.id.clone(), TenantState::new(tenant.clone()));
        let key = Self::add_key(&mut st, &tenant.id, "default", KeyScope::Write, secret).map_err(
            |e| super::StoreError::Internal(format!("default key for a new tenant: {e:?}")),
        )?;
        Ok((tenant, key))
    }

    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> StoreResult<(Vec<Tenant>, Option<TenantId>)> {
        let st = self.state();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
        let mut out: Vec<Tenant> = st
            .tenants
            .range((lower, Bound::Unbounded))
            .take(limit + 1)
            .map(|(_, t)| t.tenant.clone())
            .collect();
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        Ok(self.state().tenants.get(id).map(|t| t.tenant.clone()))
    }

    async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
    ) -> StoreResult<Option<Tenant>> {
        let updated = {
            let mut st = self.state();
            let Some(ts) = st.tenants.get_mut(id) else {
                return Ok(None);
            };
            if let Some(name) = &patch.name {
                ts.tenant.name = name.as_str().to_string();
            }
            if let Some(tier) = patch.tier {
                ts.tenant.tier = tier;
            }
            if let Some(jwt) = &patch.jwt {
                ts.tenant.jwt = jwt.clone();
            }
            patch.policy.apply(&mut ts.tenant.policy);
            ts.tenant.clone()
        };
        self.invalidate(id);
        Ok(Some(updated))
    }

    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool> {
        let removed = {
            let mut st = self.state();
            match st.tenants.remove(id) {
                Some(ts) => {
                    for k in ts.keys.values() {
                        st.key_hashes.remove(&k.hash);
                    }
                    true
                }
                None => false,
            }
        };
        if removed {
            self.inner
                .idempotency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget_tenant(id);
            self.invalidate(id);
        }
        Ok(removed)
    }

    async fn create_key(
        &self,
        tenant: &TenantId,
        label: &str,
        scope: KeyScope,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        Ok(Self::add_key(&mut self.state(), tenant, label, scope, None))
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Option<Vec<ApiKeyInfo>>> {
        let st = self.state();
        Ok(st.tenants.get(tenant).map(|ts| {
            let mut keys: Vec<ApiKeyInfo> = ts.keys.values().map(|k| k.info.clone()).collect();
            keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            keys
        }))
    }

    async fn rotate_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<Option<IssuedKey>> {
        let issued = {
            let mut st = self.state();
            let secret = generate_secret();
            let hash = hash_secret(&secret);
            let Some(rec) = st
                .tenants
                .get_mut(tenant)
                .and_then(|ts| ts.keys.get_mut(key))
            else {
                return Ok(None);
            };
            let old = std::mem::replace(&mut rec.hash, hash.clone());
            let info = rec.info.clone();
            st.key_hashes.remove(&old);
            st.key_hashes.insert(hash, (tenant.clone(), key.clone()));
            IssuedKey { info, secret }
        };
        self.invalidate(tenant);
        Ok(Some(issued))
    }

    async fn delete_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<bool> {
        let removed = {
            let mut st = self.state();
            let rec = st
                .tenants
                .get_mut(tenant)
                .and_then(|ts| ts.keys.remove(key));
            match rec {
                Some(rec) => {
                    st.key_hashes.remove(&rec.hash);
                    true
                }
                None => false,
            }
        };
        if removed {
            self.invalidate(tenant);
        }
        Ok(removed)
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        let st = self.state();
        let Some((tenant, key_id)) = st.key_hashes.get(key_hash) else {
            return Ok(None);
        };
        let Some(ts) = st.tenants.get(tenant) else {
            return Ok(None);
        };
        let Some(rec) = ts.keys.get(key_id) else {
            return Ok(None);
        };
        if !constant_time_eq(rec.hash.as_bytes(), key_hash.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            tenant: tenant.clone(),
            key_id: Some(key_id.clone()),
            label: rec.info.label.clone(),
            tier: ts.tenant.tier,
            subject: None,
            scope: rec.info.scope,
        }))
    }

    async fn tenants_by_issuer(&self, issuer: &str) -> StoreResult<Vec<Tenant>> {
        Ok(self
            .state()
            .tenants
            .values()
            .filter(|t| t.tenant.jwt.as_ref().is_some_and(|j| j.issuer == issuer))
            .take(16)
            .map(|t| t.tenant.clone())
            .collect())
    }

    async fn token_secret(&self) -> StoreResult<String> {
        Ok(self.inner.token_secret.clone())
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.invalidations.subscribe()
    }

    fn cache_allowed(&self) -> bool {
        true
    }
}
