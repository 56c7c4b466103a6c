//! Verifying tokens (DESIGN.md §7): JWTs signed with a shared secret (HS256/384/512), a
//! public key in PEM (RS256/384/512, PS256/384/512, ES256/384, EdDSA), or the key of a JWKS
//! document the token's `kid` names. `exp` and `sub` are required; `nbf` is honoured; `iss`
//! and `aud` are checked when configured; `leeway` forgives clock skew. A refusal says which
//! check failed, never the key.
//!
//! Compiled into the host and the Spin gateway (mounted beside `json.rs`), so a token one
//! deployment refuses the other refuses with the same message.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::ApiError;
use crate::wit::types::{ErrorCode, Principal};

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

/// Where keys come from.
enum Keys {
    /// One key (a secret or a PEM public key) and the algorithms it verifies.
    One(DecodingKey, &'static [Algorithm]),
    /// A JWKS document: the token's `kid` picks the key.
    Set(JwkSet),
}

/// What a verifier checks besides the signature.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// The `iss` a token must have, when set.
    pub issuer: Option<String>,
    /// The `aud` a token must have, when set.
    pub audience: Option<String>,
    /// Clock skew forgiven on `exp` and `nbf` (ms).
    pub leeway_ms: u64,
}

/// A token verifier for one configured key.
pub struct Verifier {
    keys: Keys,
    checks: Checks,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        let kind = match &self.keys {
            Keys::One(_, algorithms) => format!("{algorithms:?}"),
            Keys::Set(set) => format!("JWKS of {} keys", set.keys.len()),
        };
        f.debug_struct("Verifier")
            .field("keys", &kind)
            .field("checks", &self.checks)
            .finish()
    }
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who it says, verified.
    pub principal: Principal,
    /// When it expires (ms since the Unix epoch), without the leeway.
    pub expires_at_ms: u64,
}

/// The claims Roster reads.
#[derive(Deserialize)]
struct Claims {
    /// Optional here so that a token without it is refused by name, not as malformed.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

impl Verifier {
    /// Verifies with a shared secret (HS256/384/512).
    pub fn from_secret(secret: &[u8], checks: Checks) -> Result<Verifier, String> {
        if secret.len() < 32 {
            return Err("a JWT secret must be at least 32 bytes".into());
        }
        Ok(Verifier {
            keys: Keys::One(DecodingKey::from_secret(secret), HMAC),
            checks,
        })
    }

    /// Verifies with a PEM public key: RSA (RS*, PS*), EC (ES256, ES384) or Ed25519 (EdDSA).
    pub fn from_pem(pem: &[u8], checks: Checks) -> Result<Verifier, String> {
        let (key, family) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, EC)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, ED)
        } else {
            return Err("not a PEM RSA, EC or Ed25519 public key".into());
        };
        Ok(Verifier {
            keys: Keys::One(key, family),
            checks,
        })
    }

    /// Verifies with the keys of a JWKS document.
    pub fn from_jwks(json: &str, checks: Checks) -> Result<Verifier, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|error| format!("not a JWKS document: {error}"))?;
        if set.keys.is_empty() {
            return Err("the JWKS document has no keys".into());
        }
        for jwk in &set.keys {
            DecodingKey::from_jwk(jwk).map_err(|error| {
                format!(
                    "the JWKS key {:?} is not usable: {error}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                )
            })?;
        }
        Ok(Verifier {
            keys: Keys::Set(set),
            checks,
        })
    }

    /// The leeway (ms).
    pub fn leeway_ms(&self) -> u64 {
        self.checks.leeway_ms
    }

    /// Verifies `token`; the refusal (`UNAUTHORIZED`) says which check failed.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let header = decode_header(token)
            .map_err(|_| unauthorized("the token is not a JWT (header.payload.signature)"))?;
        let (key, family) = match &self.keys {
            Keys::One(key, family) => (key.clone(), *family),
            Keys::Set(set) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| unauthorized("the token names no key (kid)"))?;
                let jwk = set
                    .find(kid)
                    .ok_or_else(|| unauthorized(format!("no key has the token's kid {kid:?}")))?;
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|_| unauthorized(format!("the key {kid:?} is not usable")))?;
                (key, family_of(jwk))
            }
        };
        if !family.contains(&header.alg) {
            return Err(unauthorized(format!(
                "the token's algorithm {:?} is not one this key verifies",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = family.to_vec();
        validation.leeway = self.checks.leeway_ms / 1000;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.checks.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.checks.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|error| unauthorized(refusal(error.kind())))?
            .claims;
        let exp = claims
            .exp
            .ok_or_else(|| unauthorized("the token has no exp claim"))?;
        let sub = claims
            .sub
            .ok_or_else(|| unauthorized("the token has no sub claim"))?;
        if sub.is_empty() {
            return Err(unauthorized("the token's sub is empty"));
        }
        Ok(Verified {
            principal: Principal {
                user_id: Some(sub),
                verified: true,
                role: claims.role,
                permissions: claims.permissions.unwrap_or_default(),
                rooms: claims.rooms,
            },
            expires_at_ms: exp.saturating_mul(1000),
        })
    }
}

/// The algorithms a JWKS key verifies.
fn family_of(jwk: &Jwk) -> &'static [Algorithm] {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(_) => ED,
        AlgorithmParameters::OctetKey(_) => HMAC,
    }
}

/// What a failed check says.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidIssuer => "the token's issuer (iss) is not the expected one".into(),
        K::InvalidAudience => "the token's audience (aud) is not the expected one".into(),
        K::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        K::InvalidClaimFormat(claim) => format!("the token's {claim} claim is malformed"),
        K::InvalidAlgorithm => "the token's algorithm is not one this key verifies".into(),
        _ => "the token is malformed".into(),
    }
}

/// A bearer token from an `Authorization` header value (the scheme is case-insensitive,
/// RFC 7235).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The principal of an unverified caller: open mode, or the host's own calls.
pub fn open_principal() -> Principal {
    Principal {
        user_id: None,
        verified: false,
        role: None,
        permissions: Vec::new(),
        rooms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_reads_the_scheme_in_any_case() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("BEARER abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        let checks = Checks {
            issuer: None,
            audience: None,
            leeway_ms: 0,
        };
        assert!(Verifier::from_secret(b"too short", checks).is_err());
    }
}
