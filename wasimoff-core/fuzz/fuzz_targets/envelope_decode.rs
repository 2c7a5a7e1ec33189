//! Fuzzes the envelope decoders with `wasimoff_core::decode_check::envelope_roundtrip`: no
//! input may panic, and whatever decodes re-encodes to a canonical form that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wasimoff_core::decode_check::envelope_roundtrip(data));
