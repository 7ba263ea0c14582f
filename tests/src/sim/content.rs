//! File contents as the model knows them: a length and a seed from which
//! every byte is derived, so a 10 MiB file costs the model 16 bytes and a
//! read is checked byte for byte without keeping a copy.

use agent_core::ramfs::BLOCK_SIZE;

/// Bytes derived from one mixing step.
const WORD: u64 = 8;

/// The content of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Content {
    /// Selects the bytes (0 for the empty content).
    pub seed: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The bytes `8 * index .. 8 * index + 8` of content `seed`, as one
/// little-endian word (two multiplications: cheap, and every word depends
/// on its index, so misplaced data shows).
fn word(seed: u64, index: u64) -> u64 {
    let x = (seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93)
}

impl Content {
    /// The empty content (every empty file has it).
    pub const EMPTY: Content = Content { seed: 0, len: 0 };

    /// `len` bytes selected by `seed`.
    pub fn new(seed: u64, len: u64) -> Content {
        if len == 0 { Content::EMPTY } else { Content { seed, len } }
    }

    /// Data blocks the agent's ramfs uses for it.
    pub fn blocks(&self) -> u64 {
        self.len.div_ceil(BLOCK_SIZE as u64)
    }

    /// Writes the bytes at `offset..offset + out.len()` into `out`.
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        let head = self.head_len(offset, out.len());
        let (first, rest) = out.split_at_mut(head);
        self.fill_unaligned(offset, first);
        let mut index = (offset + head as u64) / WORD;
        let mut words = rest.chunks_exact_mut(WORD as usize);
        for chunk in &mut words {
            chunk.copy_from_slice(&word(self.seed, index).to_le_bytes());
            index += 1;
        }
        let tail = words.into_remainder();
        self.fill_unaligned(index * WORD, tail);
    }

    /// Whether `data` is exactly the bytes at `offset..offset + data.len()`.
    pub fn matches(&self, offset: u64, data: &[u8]) -> bool {
        if offset + data.len() as u64 > self.len {
            return false;
        }
        let head = self.head_len(offset, data.len());
        let (first, rest) = data.split_at(head);
        let mut index = (offset + head as u64) / WORD;
        let mut words = rest.chunks_exact(WORD as usize);
        let mut same = self.matches_unaligned(offset, first);
        for chunk in &mut words {
            same &= u64::from_le_bytes(chunk.try_into().expect("a word")) == word(self.seed, index);
            index += 1;
        }
        same && self.matches_unaligned(index * WORD, words.remainder())
    }

    /// Bytes from `offset` to the next word boundary, within `len`.
    fn head_len(&self, offset: u64, len: usize) -> usize {
        (((WORD - offset % WORD) % WORD) as usize).min(len)
    }

    /// `fill` for fewer than a word's bytes, or any bytes byte by byte.
    fn fill_unaligned(&self, offset: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let pos = offset + i as u64;
            *b = word(self.seed, pos / WORD).to_le_bytes()[(pos % WORD) as usize];
        }
    }

    fn matches_unaligned(&self, offset: u64, data: &[u8]) -> bool {
        data.iter().enumerate().all(|(i, b)| {
            let pos = offset + i as u64;
            *b == word(self.seed, pos / WORD).to_le_bytes()[(pos % WORD) as usize]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_match_the_whole() {
        let c = Content::new(42, 100);
        let mut whole = vec![0u8; 100];
        c.fill(0, &mut whole);
        for (at, len) in [(13, 37), (16, 8), (3, 2), (0, 100), (95, 5)] {
            let mut piece = vec![0u8; len];
            c.fill(at as u64, &mut piece);
            assert_eq!(&whole[at..at + len], &piece[..]);
            assert!(c.matches(at as u64, &piece));
            piece[len / 2] ^= 1;
            assert!(!c.matches(at as u64, &piece));
        }
        assert!(!c.matches(90, &whole[..20]), "past the end");
        assert_ne!(whole[..8], whole[8..16], "words differ");
        assert_eq!((Content::new(7, 0), Content::new(1, 4097).blocks()), (Content::EMPTY, 2));
    }
}
