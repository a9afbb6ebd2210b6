//! Lowercase hexadecimal, the way `b3sum` prints hashes.

use alloc::string::String;

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("not a hex digit at position {0}")]
    Digit(usize),
}

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Decodes exactly `N` bytes from `2 * N` hex digits (either case).
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: digits.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Digit(2 * i))?;
        let lo = nibble(pair[1]).ok_or(HexError::Digit(2 * i + 1))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

/// Decodes any even number of hex digits (either case).
pub fn decode_vec(s: &str) -> Result<alloc::vec::Vec<u8>, HexError> {
    let digits = s.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::Length {
            expected: digits.len() + 1,
            got: digits.len(),
        });
    }
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let hi = nibble(pair[0]).ok_or(HexError::Digit(2 * i))?;
            let lo = nibble(pair[1]).ok_or(HexError::Digit(2 * i + 1))?;
            Ok((hi << 4) | lo)
        })
        .collect()
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
    fn round_trip_and_errors() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode::<3>("00ABff"), Ok([0x00, 0xab, 0xff]));
        assert_eq!(decode::<2>("abc"), Err(HexError::Length { expected: 4, got: 3 }));
        assert_eq!(decode::<2>("ab0g"), Err(HexError::Digit(3)));
        assert_eq!(decode_vec("00ABff"), Ok(alloc::vec![0x00, 0xab, 0xff]));
        assert!(decode_vec("abc").is_err() && decode_vec("zz").is_err());
    }
}
