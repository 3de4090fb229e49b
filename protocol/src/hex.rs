//! Lower-case hex for the 32-byte identifiers, without a dependency.

use crate::error::ParseError;

/// Writes `bytes` as lower-case hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend_from_slice(&pair(*b));
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Writes a 32-byte identifier as hex to a formatter without allocating:
/// identifiers are printed on every answer, announcement and log line.
pub(crate) fn write32(bytes: &[u8; 32], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let mut out = [0u8; 64];
    for (o, b) in out.chunks_exact_mut(2).zip(bytes) {
        o.copy_from_slice(&pair(*b));
    }
    f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
}

/// The two lower-case hex digits of a byte.
fn pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[(b >> 4) as usize], DIGITS[(b & 0xf) as usize]]
}

/// Parses exactly `N` bytes of hex (either case).
pub(crate) fn decode<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ParseError> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return Err(ParseError::Length {
            what,
            expected: N * 2,
            found: s.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(ParseError::NotHex { what })?;
        let lo = nibble(pair[1]).ok_or(ParseError::NotHex { what })?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        let id = crate::ids::BundleHash([0xa5; 32]);
        assert_eq!(id.to_string(), "a5".repeat(32));
        assert_eq!(
            id.to_string().parse::<crate::ids::BundleHash>().unwrap(),
            id
        );
        assert_eq!(decode::<4>("x", "0001ABff").unwrap(), bytes);
        assert!(decode::<4>("x", "0001abf").is_err());
        assert!(decode::<4>("x", "0001abfg").is_err());
    }
}
