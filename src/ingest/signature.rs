//! Standard Webhooks v1 signatures (HMAC-SHA256 over `{id}.{timestamp}.{body}`): signing and
//! length-checked, constant-time verification.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a signed request was refused. Messages are safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header `{0}` is missing or empty")]
    MissingHeader(&'static str),
    #[error("header `webhook-timestamp` is not an integer")]
    BadTimestamp,
    #[error("header `webhook-timestamp` is outside the accepted tolerance")]
    Expired,
    #[error("no `v1` signature in `webhook-signature` matches")]
    NoMatch,
}

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a signing secret must start with {SECRET_PREFIX}"))?;
    let key = B64
        .decode(encoded)
        .map_err(|e| format!("a signing secret must be base64 after {SECRET_PREFIX}: {e}"))?;
    if key.is_empty() {
        return Err("a signing secret must not be empty".into());
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `v1,<base64>` signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        B64.encode(mac(key, id, timestamp, body).finalize().into_bytes())
    )
}

/// The three Standard Webhooks headers of one request.
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

fn present<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, SignatureError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::MissingHeader(name))
}

/// Verifies a request against any of `keys`: the timestamp within `tolerance_secs` of `now`,
/// and at least one `v1` entry that decodes to exactly 32 bytes and matches in constant time.
pub fn verify(
    keys: &[Vec<u8>],
    headers: &SignedHeaders<'_>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let id = present(headers.id, "webhook-id")?;
    let timestamp = present(headers.timestamp, "webhook-timestamp")?;
    let signatures = present(headers.signature, "webhook-signature")?;
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Expired);
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| B64.decode(sig).ok())
        .filter(|sig| sig.len() == 32)
        .collect();
    for key in keys {
        let expected = mac(key, id, timestamp, body);
        // `verify_slice` compares in constant time; the length is already fixed at 32.
        if candidates
            .iter()
            .any(|sig| expected.clone().verify_slice(sig).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vector A from MKIO.md F.
    const SECRET: &str = "whsec_2kb0AXog+QaEdUVWjaRwnHPHpCiaq1H8/lOE786ZROA=";
    const ID: &str = "msg_2025-03-14_job-0001_finished";
    const TS: i64 = 1741943388;
    const BODY: &[u8] = br#"{"type":"mkio.job.finished","timestamp":"2025-03-14T09:09:47Z","data":{"project":"studio-prod","job":"job-0001","state":"Finished"}}"#;
    const SIG: &str = "v1,RjW39AOMWv73sBYwHtwgh4xaIeehQ1lMmfyuArLB0ew=";

    fn check(sig: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let key = decode_secret(SECRET).unwrap();
        let ts = TS.to_string();
        verify(
            &[key],
            &SignedHeaders {
                id: Some(ID),
                timestamp: Some(&ts),
                signature: Some(sig),
            },
            body,
            now,
            300,
        )
    }

    #[test]
    fn vector_a_signs_and_verifies() {
        assert_eq!(sign(&decode_secret(SECRET).unwrap(), ID, TS, BODY), SIG);
        assert_eq!(check(SIG, BODY, TS), Ok(()));
        let two = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SIG}");
        assert_eq!(check(&two, BODY, TS), Ok(()));
    }

    #[test]
    fn vector_a_rejections() {
        for bad in [
            "v1,",
            "v1,RjW39AOM",
            "v1a,RjW39AOMWv73sBYwHtwgh4xaIeehQ1lMmfyuArLB0ew=",
            "garbage",
        ] {
            assert_eq!(check(bad, BODY, TS), Err(SignatureError::NoMatch), "{bad}");
        }
        let mut with_newline = BODY.to_vec();
        with_newline.push(b'\n');
        assert_eq!(check(SIG, &with_newline, TS), Err(SignatureError::NoMatch));
        assert_eq!(
            sign(&decode_secret(SECRET).unwrap(), ID, TS, &with_newline),
            "v1,TnTfvetj6YkwNkavPBQw8jgxDyaeCCj4JceLmoij/CE="
        );
    }

    #[test]
    fn vector_a_tolerance() {
        assert_eq!(check(SIG, BODY, TS + 299), Ok(()));
        assert_eq!(check(SIG, BODY, TS - 299), Ok(()));
        assert_eq!(check(SIG, BODY, TS + 301), Err(SignatureError::Expired));
        assert_eq!(check(SIG, BODY, TS - 301), Err(SignatureError::Expired));
    }

    #[test]
    fn vector_b() {
        let key = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn missing_headers_and_bad_secrets() {
        let key = decode_secret(SECRET).unwrap();
        let r = verify(
            &[key],
            &SignedHeaders {
                id: Some(ID),
                timestamp: None,
                signature: Some(SIG),
            },
            BODY,
            TS,
            300,
        );
        assert_eq!(r, Err(SignatureError::MissingHeader("webhook-timestamp")));
        assert!(decode_secret("nope").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret("whsec_").is_err());
    }
}
