//! Byte searches eight bytes at a time ("SWAR": one `u64` word holds eight bytes).
//!
//! Each test sets the high bit of every byte of a word that may be of the kind asked
//! for. The lowest flagged byte always is one; a byte above it may be flagged falsely
//! (a borrow carries into it), never missed. So a word with no flag holds no such
//! byte, and the lowest flag is the first match. Used by the telemetry decoder's string
//! scan and line protocol's escape check, whose exhaustive tests hold them to a plain
//! byte-by-byte search.

/// `0x01` in every byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `word` equal to `byte`.
#[inline(always)]
pub(crate) const fn equal_to(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Flags the bytes of `word` below `limit` (`limit` ≤ 128).
#[inline(always)]
pub(crate) const fn below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * limit as u64) & !word & HIGH
}

/// Index, within its word, of the byte of the lowest flag in `flags` (which is not 0).
#[inline(always)]
pub(crate) const fn first_flagged(flags: u64) -> usize {
    (flags.trailing_zeros() / 8) as usize
}

/// What the last word is filled up with: 0x80, which no test with an ASCII byte or limit
/// flags, so a flag is always a byte of the input.
const PAD: u8 = 0x80;

/// Calls `look` on `bytes` as little-endian words, eight bytes each, with the offset of
/// each (the last few bytes, fewer than eight, are one more word, filled up with [`PAD`]),
/// until it returns something; returns that.
#[inline(always)]
pub(crate) fn find_in_words<R>(
    bytes: &[u8],
    mut look: impl FnMut(usize, u64) -> Option<R>,
) -> Option<R> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if let Some(found) = look(offset, u64::from_le_bytes(word)) {
            return Some(found);
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return None;
    }
    let mut word = [PAD; 8];
    word[..tail.len()].copy_from_slice(tail);
    look(offset, u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_flag_is_the_first_match_and_none_is_missed() {
        // Every byte value at every place of a word, after a filler that is and one that is
        // not of the kind, for the tests as their callers use them.
        for filler in [b'a', b'"', 0x1f, 0xff] {
            for at in 0..8 {
                for b in 0..=255u8 {
                    let mut bytes = [filler; 8];
                    bytes[at] = b;
                    let word = u64::from_le_bytes(bytes);
                    for (flags, is) in [
                        (
                            equal_to(word, b'"'),
                            &(|x: u8| x == b'"') as &dyn Fn(u8) -> bool,
                        ),
                        (equal_to(word, b'='), &|x: u8| x == b'='),
                        (below(word, 0x20), &|x: u8| x < 0x20),
                        (below(word, b'-'), &|x: u8| x < b'-'),
                    ] {
                        let first = bytes.iter().position(|&x| is(x));
                        assert_eq!(
                            (flags != 0).then(|| first_flagged(flags)),
                            first,
                            "{bytes:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn words_cover_every_byte_once_and_the_padding_is_never_flagged() {
        for len in 0..30usize {
            let bytes: Vec<u8> = (0..len as u8).collect();
            let mut seen: Vec<u8> = Vec::new();
            let none: Option<()> = find_in_words(&bytes, |offset, word| {
                assert_eq!(offset, seen.len());
                seen.extend(word.to_le_bytes());
                None
            });
            assert!(none.is_none());
            assert_eq!(seen.len(), len.div_ceil(8) * 8);
            assert_eq!(&seen[..len], &bytes[..]);
            assert!(seen[len..].iter().all(|&b| b == PAD));
        }
        let pad = u64::from_le_bytes([PAD; 8]);
        assert_eq!(
            find_in_words(b"abcdefghij", |offset, _| (offset == 8).then_some(8)),
            Some(8)
        );
        for ascii in 0..=127u8 {
            assert_eq!(equal_to(pad, ascii), 0);
            assert_eq!(below(pad, ascii + 1), 0);
        }
    }
}
