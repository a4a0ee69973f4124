//! A fixed, seeded pseudo-random sequence (xorshift64*) shared by the test tools in
//! `examples/`: the same seed gives the same damage or the same reads on every machine.

pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is mapped to a non-zero state).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
