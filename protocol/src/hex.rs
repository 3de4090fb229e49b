//! Lower-case hex for the 32-byte identifiers, without a dependency.

use crate::error::ParseError;

/// Writes `bytes` as lower-case hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
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
        assert_eq!(decode::<4>("x", "0001ABff").unwrap(), bytes);
        assert!(decode::<4>("x", "0001abf").is_err());
        assert!(decode::<4>("x", "0001abfg").is_err());
    }
}
