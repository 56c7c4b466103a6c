//! The gateway's token verifier, from Spin variables (`wire/auth.rs` verifies).

use crate::config::{number, var};
use crate::protocol::auth::{Checks, Verifier};

/// The token verifier the variables configure, none in open mode. The keys are variables'
/// text (Spin components read no files): a secret, a PEM public key, or a JWKS document.
pub fn verifier() -> Result<Option<Verifier>, String> {
    let checks = Checks {
        issuer: var("jwt_issuer"),
        audience: var("jwt_audience"),
        leeway_ms: number("jwt_leeway_ms", 30_000)?,
    };
    let keys = [var("jwt_secret"), var("jwt_public_key"), var("jwt_jwks")];
    let verifier = match keys {
        [Some(secret), None, None] => Verifier::from_secret(secret.as_bytes(), checks)
            .map_err(|why| format!("jwt_secret: {why}"))?,
        [None, Some(pem), None] => Verifier::from_pem(pem.as_bytes(), checks)
            .map_err(|why| format!("jwt_public_key: {why}"))?,
        [None, None, Some(jwks)] => {
            Verifier::from_jwks(&jwks, checks).map_err(|why| format!("jwt_jwks: {why}"))?
        }
        [None, None, None] => return Ok(None),
        _ => return Err("set one of jwt_secret, jwt_public_key and jwt_jwks".into()),
    };
    Ok(Some(verifier))
}
