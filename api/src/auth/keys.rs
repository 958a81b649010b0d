//! Verification keys and the algorithms each one may verify: loading a PEM
//! public key file and turning JWKS entries into keys.
//!
//! Every key carries its own allow-list, derived from the key's kind and never
//! from a token: an RSA key verifies only RS256/RS384/RS512, a P-256 key only
//! ES256, a P-384 key only ES384, an Ed25519 key only EdDSA. Symmetric (`oct`)
//! keys are never taken from a PEM file or a JWKS.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use ferry_shared::Error;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

const RSA_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// A public key and the algorithms it may verify.
#[derive(Clone)]
pub(crate) struct KeyEntry {
    /// The JWKS `kid`; `None` for the PEM key and for JWKS keys without one.
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl KeyEntry {
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// Reads the PEM public key at `path` (RSA, EC P-256/P-384 or Ed25519, as
/// `PUBLIC KEY` or `RSA PUBLIC KEY`).
///
/// Errors are validation errors on the `jwt_public_key` field.
pub(crate) async fn load_pem(path: &Path) -> ferry_shared::Result<KeyEntry> {
    let text = tokio::fs::read(path).await.map_err(|error| {
        Error::validation(
            "jwt_public_key",
            format!("cannot read the JWT public key file {}: {error}", path.display()),
        )
    })?;
    parse_pem(&text)
        .map_err(|reason| Error::validation("jwt_public_key", format!("{}: {reason}", path.display())))
}

fn parse_pem(text: &[u8]) -> Result<KeyEntry, String> {
    let blocks = pem::parse_many(text).map_err(|_| "is not valid PEM".to_owned())?;
    // A private key would "work" for some kinds; refuse it so that the secret
    // half is not left lying next to the verifier's configuration.
    if blocks.iter().any(|block| block.tag().contains("PRIVATE KEY")) {
        return Err("is a private key; configure the public key instead".into());
    }
    if blocks.len() != 1 {
        return Err("must hold exactly one PEM public key".into());
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(text) {
        check_rsa(&key)?;
        return Ok(KeyEntry {
            kid: None,
            algorithms: RSA_ALGORITHMS.to_vec(),
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(text) {
        let algorithm = ec_algorithm(&key)?;
        return Ok(KeyEntry {
            kid: None,
            algorithms: vec![algorithm],
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(text) {
        let valid = key.try_get_as_bytes().is_ok_and(|bytes| bytes.len() == 32);
        if !valid {
            return Err("is not a valid Ed25519 public key".into());
        }
        return Ok(KeyEntry {
            kid: None,
            algorithms: vec![Algorithm::EdDSA],
            key,
        });
    }
    Err("is not a PEM-encoded RSA, EC (P-256, P-384) or Ed25519 public key".into())
}

/// Parses the RSA key now (rather than at the first verification) and
/// refuses small moduli.
fn check_rsa(key: &DecodingKey) -> Result<(), String> {
    let jwk = Jwk::from_decoding_key(key, None).map_err(|_| "is not a valid RSA public key".to_owned())?;
    let AlgorithmParameters::RSA(params) = &jwk.algorithm else {
        return Err("is not a valid RSA public key".into());
    };
    rsa_modulus_check(&params.n)
}

fn rsa_modulus_check(n: &str) -> Result<(), String> {
    let modulus = URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|_| "has a malformed RSA modulus".to_owned())?;
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    if significant * 8 < MIN_RSA_BITS {
        return Err(format!("is an RSA key smaller than {MIN_RSA_BITS} bits"));
    }
    Ok(())
}

/// ES256 for a P-256 point, ES384 for a P-384 point.
fn ec_algorithm(key: &DecodingKey) -> Result<Algorithm, String> {
    let jwk = Jwk::from_decoding_key(key, None)
        .map_err(|_| "is not a valid P-256 or P-384 public key".to_owned())?;
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err("uses an unsupported elliptic curve (P-256 and P-384 are)".into()),
        },
        _ => Err("is not a valid P-256 or P-384 public key".into()),
    }
}

/// Turns one JWKS entry into a key, or says why it is unusable.
///
/// The algorithms come from `kty`/`crv`; an `alg` on the key narrows them to
/// that one algorithm and must agree with the key type. Encryption keys
/// (`use: enc`) and symmetric keys are refused.
pub(crate) fn from_jwk(jwk: &Jwk) -> Result<KeyEntry, &'static str> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signature key");
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            rsa_modulus_check(&params.n).map_err(|_| "RSA key too small or malformed")?;
            let mut algorithms = RSA_ALGORITHMS.to_vec();
            algorithms.extend([Algorithm::PS256, Algorithm::PS384, Algorithm::PS512]);
            algorithms
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let (algorithm, size) = match params.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err("unsupported elliptic curve"),
            };
            let x = URL_SAFE_NO_PAD.decode(&params.x).map_err(|_| "malformed x")?;
            let y = URL_SAFE_NO_PAD.decode(&params.y).map_err(|_| "malformed y")?;
            if x.len() != size || y.len() != size {
                return Err("coordinates do not match the curve");
            }
            vec![algorithm]
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Err("unsupported OKP curve");
            }
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are not accepted"),
        _ => return Err("unsupported key type"),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => {
            // Without an `alg`, PS* stays out: RS* is what RSA JWKS serve.
            by_type
                .into_iter()
                .filter(|a| !matches!(a, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512))
                .collect()
        }
        Some(declared) => {
            let declared = Algorithm::try_from(declared).map_err(|_| "unsupported algorithm")?;
            if !by_type.contains(&declared) {
                return Err("algorithm does not match the key type");
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key")?;
    if key.family() == AlgorithmFamily::Hmac {
        return Err("symmetric keys are not accepted");
    }
    Ok(KeyEntry {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_refused_as_public_key_files() {
        let text = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_pem(text).is_err());
    }

    #[test]
    fn text_that_is_not_pem_is_refused() {
        assert!(parse_pem(b"not a key").is_err());
    }

    #[test]
    fn a_public_key_file_holds_exactly_one_key() {
        let one = include_str!("../../tests/fixtures/jwt/rsa_a_public.pem");
        assert!(parse_pem(one.as_bytes()).is_ok());
        let two = format!(
            "{one}{}",
            include_str!("../../tests/fixtures/jwt/rsa_b_public.pem")
        );
        assert_eq!(
            parse_pem(two.as_bytes()).err().as_deref(),
            Some("must hold exactly one PEM public key")
        );
        let with_private = format!(
            "{one}{}",
            include_str!("../../tests/fixtures/jwt/rsa_a_private.pem")
        );
        assert!(parse_pem(with_private.as_bytes()).is_err_and(|e| e.contains("private key")));
    }
}
