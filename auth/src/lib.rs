//! JWT authentication shared by every process: the core validates every call with a
//! [`Verifier`], the edge validates again before completing a WebSocket upgrade (to refuse
//! early), and `chatctl` mints tokens with a [`Minter`].
//!
//! One algorithm is configured per deployment and it is the whole allow-list: a token signed
//! with anything else (including `alg: none`, which jsonwebtoken never accepts) is refused.
//! `exp` and `sub` are required; `nbf` is checked when present (with the same leeway as
//! `exp`); `iss` and `aud` are checked when configured. An HS256 secret has at least
//! [`MIN_HS256_SECRET_BYTES`] bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The shortest HS256 secret accepted, in bytes: HS256 keys shorter than its 256-bit hash
/// output weaken it (RFC 7518, section 3.2), and a short secret can be brute-forced offline
/// from any one token.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Role that grants operator powers (takeover, admin calls).
pub const ROLE_ADMIN: &str = "admin";
/// Role for internal services (may push user context, post on behalf of users).
pub const ROLE_SERVICE: &str = "service";

/// How tokens are checked. Built from the `[auth]` table of a service's config; the secret
/// comes only from the environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `HS256`, `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// HS256 shared secret, at least [`MIN_HS256_SECRET_BYTES`] bytes (environment only:
    /// `CHAT_AUTH__SECRET` for the core, `CHAT_EDGE_AUTH__SECRET` for the edge).
    pub secret: Option<SecretString>,
    /// PEM public key for the asymmetric algorithms.
    pub public_key_pem: Option<String>,
    /// PEM private key, only where tokens are minted with an asymmetric algorithm.
    pub private_key_pem: Option<SecretString>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

impl AuthSettings {
    /// Keys whose environment variables the settings loaders read as written: a secret of
    /// digits only (or an issuer such as `1234`) must stay a string, not become a number.
    pub const VERBATIM_KEYS: &'static [&'static str] = &[
        "auth.algorithm",
        "auth.secret",
        "auth.public_key_pem",
        "auth.private_key_pem",
        "auth.issuer",
        "auth.audience",
    ];
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithm: "HS256".into(),
            secret: None,
            public_key_pem: None,
            private_key_pem: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

impl AuthSettings {
    /// HS256 settings around a secret (tests and `chatctl dev`).
    pub fn hs256(secret: impl Into<String>) -> Self {
        Self {
            secret: Some(SecretString::from(secret.into())),
            ..Self::default()
        }
    }

    /// The HS256 secret's bytes when HS256 is the algorithm and the secret is usable (other
    /// keys derive from it, such as the core's download URL key).
    pub fn hs256_bytes(&self) -> Option<&[u8]> {
        matches!(self.algorithm(), Ok(Algorithm::HS256))
            .then(|| self.hs256_secret("").ok())
            .flatten()
    }

    /// The HS256 secret's bytes, or why it cannot be used (`needed_for` ends the message
    /// when it is missing).
    fn hs256_secret(&self, needed_for: &str) -> Result<&[u8], AuthConfigError> {
        let secret = self.secret.as_ref().ok_or_else(|| {
            AuthConfigError(format!(
                "auth.secret is required {needed_for}: set CHAT_AUTH__SECRET in the core's \
                 environment, CHAT_EDGE_AUTH__SECRET in the edge's"
            ))
        })?;
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_HS256_SECRET_BYTES {
            // The length only, never the secret.
            return Err(AuthConfigError(format!(
                "auth.secret is {} bytes long; HS256 needs at least {MIN_HS256_SECRET_BYTES}: \
                 set CHAT_AUTH__SECRET (core) and CHAT_EDGE_AUTH__SECRET (edge) to the same \
                 longer random value, e.g. from `openssl rand -hex 32`",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    fn algorithm(&self) -> Result<Algorithm, AuthConfigError> {
        match self.algorithm.as_str() {
            "HS256" => Ok(Algorithm::HS256),
            "RS256" => Ok(Algorithm::RS256),
            "ES256" => Ok(Algorithm::ES256),
            "EdDSA" => Ok(Algorithm::EdDSA),
            other => Err(AuthConfigError(format!(
                "auth.algorithm {other:?} is not supported: use HS256, RS256, ES256 or EdDSA"
            ))),
        }
    }
}

/// A configuration that cannot produce a working verifier or minter.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(String);

/// Why a token was refused. Every variant becomes 401 / close 1008 for the client; the variant
/// is for logs and metrics only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// The reason is a fixed description, never a claim's value or a piece of the token.
    #[error("token invalid: {0}")]
    Invalid(String),
}

/// Claims we read. `roles` (array) or `role` (string) give roles.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default)]
    iat: u64,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// From `sub`.
    pub user_id: String,
    /// From `name`, else the user id.
    pub name: String,
    pub roles: Vec<String>,
    /// `exp`, seconds since the epoch: live connections are closed when it passes.
    pub expires_at: u64,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ROLE_ADMIN)
    }
}

/// Validates tokens. Cheap to clone behind an `Arc`; build once at start.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Fails when the algorithm is unknown or its key is missing or unreadable.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let algorithm = settings.algorithm()?;
        let key = match algorithm {
            Algorithm::HS256 => DecodingKey::from_secret(settings.hs256_secret("for HS256")?),
            _ => {
                let pem = settings.public_key_pem.as_deref().ok_or_else(|| {
                    AuthConfigError(format!(
                        "auth.public_key_pem is required for {}",
                        settings.algorithm
                    ))
                })?;
                let parsed = match algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_ed_pem(pem.as_bytes()),
                };
                parsed.map_err(|e| AuthConfigError(format!("auth.public_key_pem: {e}")))?
            }
        };
        let mut validation = Validation::new(algorithm);
        // A configured `iss`/`aud` is only enforced when the claim is also required: a token
        // without the claim would otherwise pass.
        let mut required = vec!["exp", "sub"];
        required.extend(settings.issuer.as_ref().map(|_| "iss"));
        required.extend(settings.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        // `nbf` (when present) with the same leeway as `exp`: a token not valid yet is refused
        // like an expired one.
        validation.validate_nbf = true;
        validation.leeway = settings.leeway_secs;
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss` and `aud`, and returns the caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                kind => AuthError::Invalid(invalid_reason(kind).into()),
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::Invalid(
                "sub must have 1 to 128 characters".into(),
            ));
        }
        let mut roles = claims.roles;
        if let Some(role) = claims.role
            && !roles.contains(&role)
        {
            roles.push(role);
        }
        let name = claims
            .name
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.chars().take(100).collect())
            .unwrap_or_else(|| claims.sub.clone());
        Ok(Principal {
            user_id: claims.sub,
            name,
            roles,
            expires_at: claims.exp,
        })
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub user_id: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub ttl_secs: u64,
}

/// Signs tokens for `chatctl token mint`, `chatctl dev` and tests.
pub struct Minter {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    /// HS256 needs the secret; the asymmetric algorithms need `private_key_pem`.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let algorithm = settings.algorithm()?;
        let key = match algorithm {
            Algorithm::HS256 => {
                EncodingKey::from_secret(settings.hs256_secret("to mint HS256 tokens")?)
            }
            _ => {
                let pem = settings.private_key_pem.as_ref().ok_or_else(|| {
                    AuthConfigError(format!(
                        "auth.private_key_pem is required to mint {} tokens",
                        settings.algorithm
                    ))
                })?;
                let pem = pem.expose_secret().as_bytes();
                let parsed = match algorithm {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                    _ => EncodingKey::from_ed_pem(pem),
                };
                parsed.map_err(|e| AuthConfigError(format!("auth.private_key_pem: {e}")))?
            }
        };
        Ok(Self {
            key,
            algorithm,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// Signs a token valid for `ttl_secs` from now.
    pub fn mint(&self, req: &MintRequest) -> Result<String, AuthConfigError> {
        let now = now_secs();
        let claims = Claims {
            sub: req.user_id.clone(),
            exp: now + req.ttl_secs,
            name: req.name.clone(),
            roles: req.roles.clone(),
            role: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| AuthConfigError(format!("cannot sign token: {e}")))
    }
}

/// Why jsonwebtoken refused a token, as a fixed phrase: its own messages may quote a claim's
/// value (serde's "invalid type: string ..."), and reasons end up in logs.
fn invalid_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidToken => "not a JWT",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not allowed",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidClaimFormat(_) => "a claim has the wrong type",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::Base64(_) => "not base64url",
        ErrorKind::Json(_) => "header or claims are not the expected JSON",
        ErrorKind::Utf8(_) => "not UTF-8",
        _ => "unreadable",
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The token of an `Authorization` value `Bearer <jwt>`: the scheme in any case, the token
/// trimmed. `None` for another scheme or an empty token. The one parser of the header, for
/// the edge's routes and the core's gRPC metadata alike.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_yield_their_token_whatever_the_scheme_case() {
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer  abc.def \t"), Some("abc.def"));
        assert_eq!(bearer("BEARER x"), Some("x"));
        assert_eq!(bearer("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer   "), None);
        assert_eq!(bearer(""), None);
    }

    const SECRET: &str = "a-test-secret-of-enough-length-32b";

    fn mint(settings: &AuthSettings, user: &str, roles: &[&str], ttl: u64) -> String {
        Minter::new(settings)
            .and_then(|m| {
                m.mint(&MintRequest {
                    user_id: user.into(),
                    name: Some("Ada".into()),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    ttl_secs: ttl,
                })
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_minted_token_verifies_with_its_roles_and_name() {
        let settings = AuthSettings::hs256(SECRET);
        let token = mint(&settings, "u1", &["admin"], 60);
        let p = Verifier::new(&settings).map(|v| v.verify(&token)).ok();
        let p = p.and_then(Result::ok);
        assert_eq!(p.as_ref().map(|p| p.user_id.as_str()), Some("u1"));
        assert_eq!(p.as_ref().map(|p| p.name.as_str()), Some("Ada"));
        assert!(p.is_some_and(|p| p.is_admin()));
    }

    #[test]
    fn the_single_role_claim_is_accepted() {
        let settings = AuthSettings::hs256(SECRET);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let claims = serde_json::json!({"sub": "u2", "exp": now_secs() + 60, "role": "admin"});
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default();
        let verifier = Verifier::new(&settings).ok();
        let p = verifier.and_then(|v| v.verify(&token).ok());
        assert!(p.is_some_and(|p| p.is_admin()));
    }

    #[test]
    fn expired_wrong_key_none_and_missing_tokens_are_refused() {
        let settings = AuthSettings::hs256(SECRET);
        let verifier = Verifier::new(&settings).ok();
        let Some(verifier) = verifier else {
            panic!("verifier must build")
        };
        let expired = {
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let claims = serde_json::json!({"sub": "u", "exp": now_secs() - 3600});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default()
        };
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));

        let other = AuthSettings::hs256("another-secret-also-long-enough-32");
        let wrong_key = mint(&other, "u", &[], 60);
        assert!(matches!(
            verifier.verify(&wrong_key),
            Err(AuthError::Invalid(_))
        ));

        // alg: none with a valid-looking payload and an empty signature.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"u","exp":{}}}"#, now_secs() + 60))
        );
        assert!(matches!(verifier.verify(&none), Err(AuthError::Invalid(_))));

        assert_eq!(verifier.verify(""), Err(AuthError::Missing));
        assert!(matches!(
            verifier.verify("not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));

        let no_exp = {
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let claims = serde_json::json!({"sub": "u"});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default()
        };
        assert!(matches!(
            verifier.verify(&no_exp),
            Err(AuthError::Invalid(_))
        ));
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default()
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_beyond_the_leeway_like_an_expired_one() {
        let mut settings = AuthSettings::hs256(SECRET);
        settings.leeway_secs = 30;
        let Ok(verifier) = Verifier::new(&settings) else {
            panic!("verifier must build")
        };
        let now = now_secs();
        let not_yet = sign(serde_json::json!({"sub": "u", "exp": now + 7200, "nbf": now + 3600}));
        assert_eq!(verifier.verify(&not_yet), Err(AuthError::NotYetValid));
        // Just beyond the leeway is refused, within it accepted (clock skew), as for `exp`.
        let beyond = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now + 40}));
        assert_eq!(verifier.verify(&beyond), Err(AuthError::NotYetValid));
        let within = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now + 20}));
        assert!(verifier.verify(&within).is_ok());
        let expired_within =
            sign(serde_json::json!({"sub": "u", "exp": now - 20, "nbf": now - 600}));
        assert!(verifier.verify(&expired_within).is_ok());
        let past = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now - 600}));
        assert!(verifier.verify(&past).is_ok());
        // A malformed `nbf` is refused, not ignored.
        let malformed = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": "soon"}));
        assert!(matches!(
            verifier.verify(&malformed),
            Err(AuthError::Invalid(_))
        ));
        // With no leeway, a token starting a minute from now is refused too.
        settings.leeway_secs = 0;
        let Ok(strict) = Verifier::new(&settings) else {
            panic!("verifier must build")
        };
        let soon = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now + 60}));
        assert_eq!(strict.verify(&soon), Err(AuthError::NotYetValid));
    }

    #[test]
    fn refusal_reasons_never_quote_the_token_or_its_claims() {
        let Ok(verifier) = Verifier::new(&AuthSettings::hs256(SECRET)) else {
            panic!("verifier must build")
        };
        let odd = sign(serde_json::json!({"sub": "u", "exp": "hidden-claim-value"}));
        let wrong_type =
            sign(serde_json::json!({"sub": ["hidden-claim-value"], "exp": now_secs() + 60}));
        for token in [
            odd,
            wrong_type,
            "eyJhbGciOi.hidden-claim-value.x".to_string(),
        ] {
            let reason = verifier.verify(&token).err().map(|e| e.to_string());
            let Some(reason) = reason else {
                panic!("{token} must be refused")
            };
            assert!(!reason.contains("hidden-claim-value"), "{reason}");
            assert!(!reason.contains(&token), "{reason}");
        }
    }

    #[test]
    fn an_hs256_secret_shorter_than_32_bytes_is_refused_naming_both_variables() {
        let short = "x".repeat(MIN_HS256_SECRET_BYTES - 1);
        for err in [
            Verifier::new(&AuthSettings::hs256(short.clone())).err(),
            Minter::new(&AuthSettings::hs256(short.clone())).err(),
        ] {
            let Some(err) = err.map(|e| e.to_string()) else {
                panic!("a 31-byte secret must be refused")
            };
            assert!(err.contains("CHAT_AUTH__SECRET"), "{err}");
            assert!(err.contains("CHAT_EDGE_AUTH__SECRET"), "{err}");
            assert!(err.contains("at least 32"), "{err}");
            assert!(
                !err.contains(&short),
                "the message never shows the secret: {err}"
            );
        }
        // Bytes, not characters: 11 three-byte characters are 33 bytes.
        let multibyte = "\u{20ac}".repeat(11);
        assert!(Verifier::new(&AuthSettings::hs256(multibyte)).is_ok());
        let exact = "y".repeat(MIN_HS256_SECRET_BYTES);
        assert!(Verifier::new(&AuthSettings::hs256(exact.clone())).is_ok());
        assert!(Minter::new(&AuthSettings::hs256(exact)).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let mut settings = AuthSettings::hs256(SECRET);
        settings.issuer = Some("https://issuer.example".into());
        settings.audience = Some("chat".into());
        let good = mint(&settings, "u", &[], 60);
        let plain = mint(&AuthSettings::hs256(SECRET), "u", &[], 60);
        let Ok(verifier) = Verifier::new(&settings) else {
            panic!("verifier must build")
        };
        assert!(verifier.verify(&good).is_ok());
        assert!(verifier.verify(&plain).is_err());
    }

    #[test]
    fn a_token_of_another_algorithm_is_refused() {
        let settings = AuthSettings::hs256(SECRET);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let claims = serde_json::json!({"sub": "u", "exp": now_secs() + 60});
        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key).unwrap_or_default();
        let Ok(verifier) = Verifier::new(&settings) else {
            panic!("verifier must build")
        };
        assert!(verifier.verify(&hs512).is_err());
    }

    #[test]
    fn bad_configuration_is_explained() {
        let err = Verifier::new(&AuthSettings::default())
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("CHAT_AUTH__SECRET")));
        let mut s = AuthSettings::hs256(SECRET);
        s.algorithm = "HS999".into();
        assert!(Verifier::new(&s).is_err());
    }

    #[test]
    fn asymmetric_algorithms_verify_with_the_public_key_and_refuse_other_keys() {
        let pairs = [
            (
                "RS256",
                include_str!("../testdata/rs256.key.pem"),
                include_str!("../testdata/rs256.pub.pem"),
            ),
            (
                "ES256",
                include_str!("../testdata/es256.key.pem"),
                include_str!("../testdata/es256.pub.pem"),
            ),
            (
                "EdDSA",
                include_str!("../testdata/ed25519.key.pem"),
                include_str!("../testdata/ed25519.pub.pem"),
            ),
        ];
        let hs = mint(&AuthSettings::hs256(SECRET), "u", &[], 60);
        for (alg, private, public) in pairs {
            let settings = AuthSettings {
                algorithm: alg.into(),
                public_key_pem: Some(public.into()),
                private_key_pem: Some(SecretString::from(private.to_string())),
                ..AuthSettings::default()
            };
            let token = mint(&settings, "u-asym", &["admin"], 60);
            let Ok(verifier) = Verifier::new(&settings) else {
                panic!("{alg}: verifier must build")
            };
            let who = verifier.verify(&token);
            assert!(
                who.as_ref()
                    .is_ok_and(|p| p.user_id == "u-asym" && p.is_admin()),
                "{alg}: {who:?}"
            );
            assert!(
                verifier.verify(&hs).is_err(),
                "{alg}: an HS256 token is refused"
            );
        }
        // A token signed by one asymmetric key does not verify under another algorithm's key.
        let ed = AuthSettings {
            algorithm: "EdDSA".into(),
            private_key_pem: Some(SecretString::from(
                include_str!("../testdata/ed25519.key.pem").to_string(),
            )),
            ..AuthSettings::default()
        };
        let es = AuthSettings {
            algorithm: "ES256".into(),
            public_key_pem: Some(include_str!("../testdata/es256.pub.pem").into()),
            ..AuthSettings::default()
        };
        let token = mint(&ed, "u", &[], 60);
        let Ok(verifier) = Verifier::new(&es) else {
            panic!("verifier must build")
        };
        assert!(verifier.verify(&token).is_err());
        let missing = Verifier::new(&AuthSettings {
            algorithm: "RS256".into(),
            ..AuthSettings::default()
        });
        assert!(
            missing
                .err()
                .is_some_and(|e| e.to_string().contains("public_key_pem"))
        );
    }

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
