//! Random inputs for the unit tests that feed every decoder garbage (tests
//! only). A fixed-seed generator, so a failure repeats; the fragments mix
//! pieces of the real grammars with arbitrary bytes, which reaches deeper
//! into a parser than uniform noise does.

/// xorshift64: small, fast and deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Bytes built from `fragments` and random bytes, up to `max_parts` pieces.
    pub fn bytes_from(&mut self, fragments: &[&[u8]], max_parts: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..self.below(max_parts + 1) {
            if self.below(4) == 0 {
                for _ in 0..self.below(8) {
                    out.push(self.next() as u8);
                }
            } else {
                out.extend_from_slice(fragments[self.below(fragments.len())]);
            }
        }
        out
    }
}

/// The settings of every property test: `cases` cases from a fixed `seed`, so a
/// failure repeats; set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`) to explore
/// further. No regression files are written into the source tree.
pub fn proptest_config(cases: u32, seed: u64) -> proptest::prelude::ProptestConfig {
    use proptest::test_runner::RngSeed;
    let default = proptest::prelude::ProptestConfig::default();
    proptest::prelude::ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(seed),
            chosen => chosen,
        },
        ..default
    }
}
