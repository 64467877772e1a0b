//! Not part of the API: shared by this crate's and the supervisor's unit
//! tests.
//!
//! A small deterministic generator for the property tests: xorshift64*,
//! seeded with a fixed number, so every run tries the same cases and a
//! failure names the case that failed.

/// xorshift64* (Vigna), never zero.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed (mixed, so that small seeds differ).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items`.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// Up to `max` arbitrary bytes, biased towards the ones parsers look
    /// at (ASCII punctuation, digits, newlines, NUL, bytes above 0x7f).
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        const LIKELY: &[u8] = b"\0\n\r\t \\\"'#;:=@[]./-_09AZaz\x7f\x80\xff";
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                if self.one_in(2) {
                    LIKELY[self.below(LIKELY.len())]
                } else {
                    self.next() as u8
                }
            })
            .collect()
    }

    /// Up to `max` characters drawn from `alphabet`.
    pub fn string_from(&mut self, alphabet: &str, max: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let len = self.below(max + 1);
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }

    /// Up to `max` arbitrary characters: mostly ASCII, some control
    /// characters, some wide ones.
    pub fn string(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| match self.below(10) {
                0 => char::from_u32(self.below(0x20) as u32).unwrap_or('?'),
                1 => char::from_u32(0x80 + self.below(0x10_0000) as u32).unwrap_or('é'),
                _ => char::from(0x20 + self.below(0x5f) as u8),
            })
            .collect()
    }

    /// Arbitrary bytes mixed with the pieces a parser's valid inputs are
    /// made of, joined in random order: finds the paths that random bytes
    /// alone rarely reach.
    pub fn mix(&mut self, pieces: &[&str], max_parts: usize) -> String {
        let n = self.below(max_parts + 1);
        let mut out = String::new();
        for _ in 0..n {
            if self.one_in(4) {
                out.push_str(&String::from_utf8_lossy(&self.bytes(4)));
            } else {
                out.push_str(self.pick(pieces));
            }
        }
        out
    }
}
