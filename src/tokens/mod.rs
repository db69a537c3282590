//! JWT exchange (contract section 2): a tenant's own JWTs ([`verify`], checked
//! against its [`settings`]) are exchanged for short-lived service tokens
//! ([`service`]) that every instance accepts in `X-Api-Key`.

pub mod service;
pub mod verify;

pub use crate::domain::jwt::{JwtAlg, JwtSettings};
pub use service::{looks_like_token, TokenKeys};
pub use verify::Verifier;

/// Makes TLS (JWKS over https) and JWT signing usable: installs the process's
/// rustls crypto provider (aws-lc-rs, the one jsonwebtoken uses too) and runs
/// the signing self-test. Idempotent.
pub fn init_crypto() -> Result<(), String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    service::self_test()
}
