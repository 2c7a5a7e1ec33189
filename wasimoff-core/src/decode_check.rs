//! The property every byte string must keep through the envelope decoders (feature
//! `conformance`): no input panics, and whatever decodes re-encodes to a canonical form that
//! decodes again (binary: to a fixpoint; JSON: without error). The fuzz target
//! (`fuzz/fuzz_targets/envelope_decode.rs`, coverage-guided with libFuzzer) and the seeded
//! mutation test CI runs (`tests/it/mutations.rs`) both check exactly this.

#![allow(
    clippy::panic,
    clippy::expect_used,
    reason = "a violated property must fail the fuzzer or the test"
)]

use crate::envelope::{Codec, Envelope, Frame};

/// Decodes `data` as a binary envelope and, if it is UTF-8, as a JSON one; panics if a decoded
/// envelope does not round-trip.
pub fn envelope_roundtrip(data: &[u8]) {
    if let Ok(envelope) = Envelope::decode_binary(data) {
        let canonical = envelope.encode_binary();
        let again =
            Envelope::decode_binary(canonical.clone()).expect("re-encoded envelope decodes");
        assert_eq!(
            again.encode_binary(),
            canonical,
            "binary re-encoding is a fixpoint"
        );
        if let Ok(json) = envelope.encode_json() {
            Envelope::decode_json(&json).expect("our JSON decodes");
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = Codec::Json.decode(Frame::Text(text.to_owned()))
    {
        let canonical = envelope.encode_binary();
        Envelope::decode_binary(canonical).expect("JSON-decoded envelope encodes to binary");
        if let Ok(json) = envelope.encode_json() {
            Envelope::decode_json(&json).expect("our JSON decodes");
        }
    }
}
