//! The envelope decoders' property (`wasimoff_core::decode_check`) over seeded mutations of
//! the golden envelopes, binary and JSON: bits flipped, bytes overwritten, removed, inserted
//! and repeated, tails cut, two envelopes spliced. A cheap, deterministic relative of the
//! coverage-guided fuzz target (`cargo xtask fuzz`), run by every `cargo test`: a mutant that
//! panics is reported with its seed and bytes, so it can be replayed.

use wasimoff_core::decode_check::envelope_roundtrip;
use wasimoff_core::envelope::Envelope;

/// Mutants per seed input.
const MUTANTS: usize = 20_000;

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One to four random edits of `input` (`other` is the splice partner).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len().max(1);
        let at = rng.below(len).min(data.len());
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                // Values that matter to varints, lengths and tags.
                data[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, rng.next() as u8][rng.below(6)];
            }
            2 => {
                let end = (at + 1 + rng.below(8)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
            5 => data.truncate(at),
            _ => {
                let cut = rng.below(other.len().max(1)).min(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[cut..]);
            }
        }
    }
    data
}

/// The golden envelopes (binary and JSON) of `../shared/vectors`.
fn seeds() -> Vec<Vec<u8>> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/wire-vectors.json");
    let text = std::fs::read_to_string(&path).expect("the golden vectors beside the checkout");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut seeds = Vec::new();
    for v in vectors
        .iter()
        .filter(|v| v["message_type"] == "wasimoff.v1.Envelope")
    {
        seeds.push(hex::decode(v["hex"].as_str().unwrap()).unwrap());
        seeds.push(v["json"].as_str().unwrap().as_bytes().to_vec());
    }
    assert!(seeds.len() >= 4, "the vectors hold envelopes");
    seeds
}

#[test]
fn mutated_envelopes_keep_the_decode_property() {
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate() {
        // The unmutated seeds decode (else the mutants would only test rejection).
        let decodes = Envelope::decode_binary(seed.as_slice()).is_ok()
            || std::str::from_utf8(seed).is_ok_and(|text| Envelope::decode_json(text).is_ok());
        assert!(decodes, "seed {i} does not decode");
        envelope_roundtrip(seed);
        let other = &seeds[(i + 1) % seeds.len()];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
        let mut decoded = 0;
        for n in 0..MUTANTS {
            let mutant = mutate(&mut rng, seed, other);
            decoded += usize::from(
                Envelope::decode_binary(mutant.as_slice()).is_ok()
                    || std::str::from_utf8(&mutant)
                        .is_ok_and(|text| Envelope::decode_json(text).is_ok()),
            );
            let caught = std::panic::catch_unwind(|| envelope_roundtrip(&mutant));
            assert!(
                caught.is_ok(),
                "seed {i}, mutant {n} breaks the decode property: {mutant:02x?}"
            );
        }
        // Mutants that still decode exercise the re-encoding half of the property.
        assert!(
            decoded >= MUTANTS / 100,
            "seed {i}: only {decoded} of {MUTANTS} mutants decode"
        );
    }
}
