//! Download URLs: `/files/{id}?exp=<unix seconds>&sig=<base64url HMAC-SHA256 of "id\nexp">`.
//! The signature binds the file id and the expiry, so a URL cannot be stretched in time or
//! pointed at another file; checking it is constant time (aws-lc-rs `hmac::verify`).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signs and checks download URLs with one key.
pub struct UrlSigner {
    key: hmac::Key,
    ttl_secs: i64,
}

/// Why a URL is refused (every reason is a 404 to the client: a bad URL reveals nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadUrl {
    Expired,
    Forged,
}

impl UrlSigner {
    /// `secret`: at least 32 bytes. URLs live `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
        }
    }

    /// A key derived from another secret (the JWT secret), so the two never coincide.
    pub fn derived(secret: &[u8], ttl_secs: u64) -> Self {
        let base = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&base, b"chat-backend file URLs v1");
        Self::new(tag.as_ref(), ttl_secs)
    }

    /// A random key: URLs stop working when the process restarts.
    pub fn random(ttl_secs: u64) -> Self {
        let mut secret = [0u8; 32];
        // The system RNG; without it no key can be made at all, and zeros would be guessable.
        if aws_lc_rs::rand::fill(&mut secret).is_err() {
            tracing::error!("no system randomness for the file URL key; using the process id");
            secret[..4].copy_from_slice(&std::process::id().to_le_bytes());
        }
        Self::new(&secret, ttl_secs)
    }

    fn signature(&self, file_id: &str, exp: i64) -> hmac::Tag {
        hmac::sign(&self.key, format!("{file_id}\n{exp}").as_bytes())
    }

    /// The URL of `file_id`, valid from `now` (unix seconds) for the signer's lifetime.
    pub fn url(&self, file_id: &str, now: i64) -> String {
        let exp = now.saturating_add(self.ttl_secs);
        let sig = URL_SAFE_NO_PAD.encode(self.signature(file_id, exp));
        format!("/files/{file_id}?exp={exp}&sig={sig}")
    }

    /// Whether `sig` is this signer's for `file_id` and `exp`, and `exp` is not past `now`.
    pub fn verify(&self, file_id: &str, exp: i64, sig: &str, now: i64) -> Result<(), BadUrl> {
        let Ok(given) = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')) else {
            return Err(BadUrl::Forged);
        };
        hmac::verify(&self.key, format!("{file_id}\n{exp}").as_bytes(), &given)
            .map_err(|_| BadUrl::Forged)?;
        if exp < now {
            return Err(BadUrl::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, i64, String) {
        let (path, query) = url.split_once('?').unwrap();
        let id = path.trim_start_matches("/files/").to_owned();
        let mut exp = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("exp", v) => exp = v.parse().unwrap(),
                ("sig", v) => sig = v.to_owned(),
                _ => {}
            }
        }
        (id, exp, sig)
    }

    #[test]
    fn a_url_works_until_it_expires_and_only_for_its_file() {
        let signer = UrlSigner::derived(b"a-secret-of-at-least-thirty-two-bytes", 60);
        let (id, exp, sig) = parts(&signer.url("f1", 1_000));
        assert_eq!((id.as_str(), exp), ("f1", 1_060));
        assert_eq!(signer.verify("f1", exp, &sig, 1_060), Ok(()));
        assert_eq!(signer.verify("f1", exp, &sig, 1_061), Err(BadUrl::Expired));
        assert_eq!(signer.verify("f2", exp, &sig, 1_000), Err(BadUrl::Forged));
        assert_eq!(
            signer.verify("f1", exp + 3600, &sig, 1_000),
            Err(BadUrl::Forged)
        );
        assert_eq!(signer.verify("f1", exp, "AAAA", 1_000), Err(BadUrl::Forged));
        assert_eq!(signer.verify("f1", exp, "%%%", 1_000), Err(BadUrl::Forged));
        let other = UrlSigner::derived(b"another-secret-of-thirty-two-bytes!!", 60);
        assert_eq!(other.verify("f1", exp, &sig, 1_000), Err(BadUrl::Forged));
    }
}
