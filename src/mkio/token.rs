//! The MK.IO token's expiry: read the JWT's `exp` claim (no signature check; MK.IO checks it)
//! and warn ahead of it, because MK.IO tokens cannot be refreshed (MKIO.md E.1).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Where a token stands against its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Not a JWT, or no readable `exp`.
    Unknown,
    Valid {
        exp: DateTime<Utc>,
    },
    ExpiringSoon {
        exp: DateTime<Utc>,
    },
    Expired {
        exp: DateTime<Utc>,
    },
}

/// The `exp` claim of a JWT, if the token is one and has it.
pub fn expiry(token: &str) -> Option<DateTime<Utc>> {
    let mut parts = token.trim().split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?; // a signature part, possibly empty
                   // Some encoders pad; the JWT form does not.
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp
        .as_i64()
        .or_else(|| exp.as_f64().map(|f| f as i64))
        .or_else(|| exp.as_str().and_then(|s| s.parse().ok()))?;
    DateTime::from_timestamp(secs, 0)
}

/// Classifies `token` at `now`: expiring soon when `exp` is within `warning`.
pub fn check_expiry(token: &str, warning: Duration, now: DateTime<Utc>) -> Expiry {
    let Some(exp) = expiry(token) else {
        return Expiry::Unknown;
    };
    let warning = chrono::Duration::from_std(warning).unwrap_or(chrono::Duration::MAX);
    if exp <= now {
        Expiry::Expired { exp }
    } else if now.checked_add_signed(warning).is_none_or(|w| exp <= w) {
        Expiry::ExpiringSoon { exp }
    } else {
        Expiry::Valid { exp }
    }
}

/// Logs a warning when the token has expired or expires within `warning`; call it at start-up.
/// Only the expiry time is logged, never the token.
pub fn warn_if_expiring(token: &str, warning: Duration) -> Expiry {
    let now = Utc::now();
    let status = check_expiry(token, warning, now);
    match status {
        Expiry::Expired { exp } => tracing::warn!(
            expired_at = %exp.to_rfc3339(),
            "the MK.IO token (mkio.token) has expired; MK.IO will refuse every call until it is \
             replaced"
        ),
        Expiry::ExpiringSoon { exp } => tracing::warn!(
            expires_at = %exp.to_rfc3339(),
            days_left = (exp - now).num_days(),
            "the MK.IO token (mkio.token) expires soon and cannot be refreshed; create a new one"
        ),
        Expiry::Valid { exp } => {
            tracing::debug!(expires_at = %exp.to_rfc3339(), "MK.IO token expiry")
        }
        Expiry::Unknown if !token.is_empty() => {
            tracing::debug!("the MK.IO token has no readable exp claim; no expiry warning")
        }
        Expiry::Unknown => {}
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn reads_exp_from_the_payload() {
        // A payload whose base64url form uses `-` and `_`.
        let token = jwt(r#"{"sub":"??>>??","exp":1767225600,"x":"ÿÿ"}"#);
        assert!(token.contains('-') || token.contains('_'), "{token}");
        assert_eq!(expiry(&token), Some(at(1_767_225_600)));
        assert_eq!(
            expiry(&jwt(r#"{"exp":"1767225600"}"#)),
            Some(at(1_767_225_600))
        );
    }

    #[test]
    fn non_jwts_and_missing_exp_are_unknown() {
        let now = at(1_700_000_000);
        for token in [
            "",
            "opaque-token",
            "a.b",
            "a.!!!.c",
            &jwt(r#"{"sub":"x"}"#),
            &jwt("[]"),
        ] {
            assert_eq!(check_expiry(token, DAY, now), Expiry::Unknown, "{token}");
        }
    }

    #[test]
    fn classifies_valid_soon_and_expired() {
        let now = at(1_700_000_000);
        let token = |exp: i64| jwt(&format!(r#"{{"exp":{exp}}}"#));
        let in_30d = 1_700_000_000 + 30 * 86_400;
        assert_eq!(
            check_expiry(&token(in_30d), 14 * DAY, now),
            Expiry::Valid { exp: at(in_30d) }
        );
        let in_3d = 1_700_000_000 + 3 * 86_400;
        assert_eq!(
            check_expiry(&token(in_3d), 14 * DAY, now),
            Expiry::ExpiringSoon { exp: at(in_3d) }
        );
        assert_eq!(
            check_expiry(&token(1_699_999_999), 14 * DAY, now),
            Expiry::Expired {
                exp: at(1_699_999_999)
            }
        );
        assert_eq!(
            check_expiry(&token(1_700_000_000), DAY, now),
            Expiry::Expired {
                exp: at(1_700_000_000)
            }
        );
        assert!(matches!(
            check_expiry(&token(in_30d), Duration::MAX, now),
            Expiry::ExpiringSoon { .. }
        ));
        assert_eq!(
            warn_if_expiring(&token(1), DAY),
            Expiry::Expired { exp: at(1) }
        );
    }
}
