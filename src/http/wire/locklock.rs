//! The locklock-compatible API: its optional bodies and its answers.

use serde::Serialize;
use utoipa::ToSchema;

/// The optional body of a locklock acquire.
#[derive(ToSchema)]
pub struct LockOptions {
    /// 1–1024 bytes; needed again to release the lock.
    #[schema(min_length = 1, max_length = 1024)]
    pub secret: Option<String>,
    /// Seconds, 1 to 31,536,000 (default 2,592,000; public locks at most
    /// 2,592,000, clamped to the server's COOPLOCKER_PUBLIC_MAX_EXPIRES_IN).
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub expires_in: Option<u64>,
}

/// The optional body of a locklock release.
#[derive(ToSchema)]
pub struct LockSecret {
    /// The secret the lock was acquired with, if any.
    #[schema(min_length = 1, max_length = 1024)]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockAcquired<'a> {
    pub lock: &'a str,
    pub acquired: bool,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub fencing_token: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LockReleased {
    pub released: bool,
}

/// The query of a locklock acquire (contract section 12).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LockWaitParams {
    /// Wait up to this many seconds in the lock's line (strict FIFO) when it
    /// is held; not acquired in time: 409 LOCKED.
    #[param(minimum = 0, maximum = 60, default = 0)]
    pub wait: Option<u64>,
}
