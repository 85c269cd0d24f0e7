//! Identifiers and timestamps in the shapes MK.IO uses: UUIDs, error refs, RFC 3339 times.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::SystemTime;

/// A random version-4 UUID, formatted the usual way.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

/// A UUID-shaped id that is the same for the same name in every run (project ids).
pub(crate) fn stable_uuid(name: &str) -> String {
    let mut b = [0u8; 16];
    for (i, chunk) in b.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        (i, name).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

fn format_uuid(b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The `ref` of an error body: 32 hex digits, unique per response.
pub(crate) fn error_ref() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 3339 in UTC with microseconds, as MK.IO bodies show (`2024-03-27T15:36:43.395374Z`).
pub(crate) fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_v4_shape_and_stable_ones_repeat() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid_v4(), u);
        assert_eq!(stable_uuid("studio-prod"), stable_uuid("studio-prod"));
        assert_ne!(stable_uuid("studio-prod"), stable_uuid("other"));
        assert_eq!(error_ref().len(), 32);
    }
}
