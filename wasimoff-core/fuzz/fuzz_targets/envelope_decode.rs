//! Fuzzes the envelope decoders: no input may panic, and whatever decodes re-encodes to a
//! canonical form that decodes again (binary: to a fixpoint; JSON: without error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasimoff_core::envelope::{Codec, Envelope, Frame};

fuzz_target!(|data: &[u8]| {
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
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(envelope) = Codec::Json.decode(Frame::Text(text.to_owned())) {
            let canonical = envelope.encode_binary();
            Envelope::decode_binary(canonical).expect("JSON-decoded envelope encodes to binary");
            if let Ok(json) = envelope.encode_json() {
                Envelope::decode_json(&json).expect("our JSON decodes");
            }
        }
    }
});
