//! Shared-secret authentication of webhook deliveries, constant-time against a set of secrets.

use crate::config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The accepted secrets, kept as SHA-256 digests so every comparison has the same length.
#[derive(Clone, Default)]
pub struct SecretSet {
    digests: Vec<[u8; 32]>,
}

impl SecretSet {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            digests: secrets
                .iter()
                .map(|s| digest(s.expose().as_bytes()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` equals any accepted secret. Every secret is compared, so the time
    /// taken says nothing about which one (or how much of one) matched.
    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = digest(candidate.as_bytes());
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Where a request may carry its shared secret.
pub struct Credentials<'a> {
    pub authorization: Option<&'a str>,
    pub x_webhook_secret: Option<&'a str>,
    /// The configured query parameter's value, when that parameter is enabled.
    pub query: Option<&'a str>,
}

/// Whether any presented credential matches an accepted secret.
pub fn authenticate(secrets: &SecretSet, creds: &Credentials<'_>) -> bool {
    let bearer = creds.authorization.and_then(|h| {
        let (scheme, token) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    [bearer, creds.x_webhook_secret.map(str::trim), creds.query]
        .into_iter()
        .flatten()
        .filter(|c| !c.is_empty())
        .any(|c| secrets.accepts(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> SecretSet {
        SecretSet::new(&[Secret::new("old-secret"), Secret::new("new-secret")])
    }

    fn creds<'a>(a: Option<&'a str>, x: Option<&'a str>, q: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            authorization: a,
            x_webhook_secret: x,
            query: q,
        }
    }

    #[test]
    fn accepts_any_configured_secret_in_any_place() {
        let s = set();
        assert!(authenticate(
            &s,
            &creds(Some("Bearer old-secret"), None, None)
        ));
        assert!(authenticate(
            &s,
            &creds(Some("bearer new-secret"), None, None)
        ));
        assert!(authenticate(&s, &creds(None, Some("new-secret"), None)));
        assert!(authenticate(&s, &creds(None, None, Some("old-secret"))));
    }

    #[test]
    fn rejects_wrong_missing_and_partial_secrets() {
        let s = set();
        assert!(!authenticate(&s, &creds(None, None, None)));
        assert!(!authenticate(&s, &creds(Some("Bearer wrong"), None, None)));
        assert!(!authenticate(
            &s,
            &creds(Some("Basic old-secret"), None, None)
        ));
        assert!(!authenticate(&s, &creds(Some("old-secret"), None, None)));
        assert!(!authenticate(&s, &creds(None, Some("old-secre"), None)));
        assert!(!authenticate(&s, &creds(None, Some("old-secrett"), None)));
        assert!(!authenticate(
            &s,
            &creds(Some("Bearer "), Some(""), Some(""))
        ));
        assert!(!authenticate(
            &SecretSet::default(),
            &creds(Some("Bearer x"), None, None)
        ));
    }
}
