//! Memory limits for guests in browsers. The JS API cannot veto `memory.grow`, but a module's
//! own memory may declare a maximum, and then `memory.grow` beyond it fails (returns -1) as the
//! spec demands. So before compiling, [`cap_memory`] rewrites the memory section so that every
//! memory the module defines has a maximum of at most the cap; all other sections are copied
//! byte for byte. A guest's allocator then sees a refused allocation, exactly as under
//! wasmtime with a memory limit.
//!
//! Plain Rust (wasmparser, wasm-encoder): unit-tested natively.

use std::borrow::Cow;

use wasm_encoder::{MemorySection, MemoryType, Module, RawSection};
use wasmparser::{Parser, Payload};

/// The wasm page size.
pub const PAGE: u64 = 65_536;

/// `bytes` with the maximum of every defined 32-bit memory lowered to `max_bytes` (rounded down
/// to whole pages, at least one). Unchanged (borrowed) when no memory needs lowering. Modules
/// that only import their memory are unchanged too: the importer sets that memory's size.
pub fn cap_memory(bytes: &[u8], max_bytes: u64) -> Result<Cow<'_, [u8]>, String> {
    let cap_pages = (max_bytes / PAGE).max(1);
    let mut needs_change = false;
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::MemorySection(reader) = payload.map_err(|e| e.to_string())? {
            for memory in reader {
                let memory = memory.map_err(|e| e.to_string())?;
                if !memory.memory64 && memory.maximum.is_none_or(|max| max > cap_pages) {
                    needs_change = true;
                }
            }
        }
    }
    if !needs_change {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut module = Module::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { .. } | Payload::End(_) => {}
            Payload::MemorySection(reader) => {
                let mut section = MemorySection::new();
                for memory in reader {
                    let memory = memory.map_err(|e| e.to_string())?;
                    let maximum = if memory.memory64 {
                        memory.maximum
                    } else {
                        Some(memory.maximum.map_or(cap_pages, |max| max.min(cap_pages)))
                    };
                    if maximum.is_some_and(|max| max < memory.initial) {
                        return Err(format!(
                            "the module needs {} bytes of memory at the start, more than the \
                             limit of {max_bytes} bytes",
                            memory.initial * PAGE
                        ));
                    }
                    section.memory(MemoryType {
                        minimum: memory.initial,
                        maximum,
                        memory64: memory.memory64,
                        shared: memory.shared,
                        page_size_log2: memory.page_size_log2,
                    });
                }
                module.section(&section);
            }
            // Function bodies come as one code section entry plus one payload per body; the
            // section's range covers them all, so copy it once and skip the bodies.
            Payload::CodeSectionEntry(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    let data = bytes
                        .get(range)
                        .ok_or("a section lies outside the module")?;
                    module.section(&RawSection { id, data });
                }
            }
        }
    }
    Ok(Cow::Owned(module.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_of(bytes: &[u8]) -> Vec<(u64, Option<u64>)> {
        let mut out = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            if let Payload::MemorySection(reader) = payload.unwrap() {
                for memory in reader {
                    let memory = memory.unwrap();
                    out.push((memory.initial, memory.maximum));
                }
            }
        }
        out
    }

    #[test]
    fn lowers_the_maximum_and_keeps_the_rest() {
        let module = wat::parse_str(
            r#"(module (memory (export "memory") 2)
                 (func (export "_start") (drop (memory.grow (i32.const 1))))
                 (@custom "note" "kept"))"#,
        )
        .unwrap();
        let capped = cap_memory(&module, 4 * PAGE).unwrap();
        assert_eq!(memory_of(&capped), vec![(2, Some(4))]);
        // Everything else is byte for byte the same: only the memory section grew.
        let validated = wasmparser::Validator::new().validate_all(&capped);
        assert!(validated.is_ok(), "{:?}", validated.err());
        assert!(capped.windows(4).any(|w| w == b"kept"));
        // A lower declared maximum stays; a cap of less than a page is one page.
        let small = wat::parse_str(r#"(module (memory 1 3))"#).unwrap();
        assert!(matches!(
            cap_memory(&small, 8 * PAGE).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            memory_of(&cap_memory(&small, 1).unwrap()),
            vec![(1, Some(1))]
        );
    }

    #[test]
    fn real_guest_stays_valid() {
        let capped = cap_memory(wasimoff_wasi_apps::MEMBOMB, 64 << 20).unwrap();
        assert_eq!(memory_of(&capped)[0].1, Some(1024));
        assert!(wasmparser::Validator::new().validate_all(&capped).is_ok());
    }

    #[test]
    fn too_small_for_the_initial_memory_is_an_error() {
        let module = wat::parse_str(r#"(module (memory 20))"#).unwrap();
        let error = cap_memory(&module, 4 * PAGE).unwrap_err();
        assert!(error.contains("more than the limit"), "{error}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(cap_memory(b"\0asm\x01\0\0\0\x05\xff", PAGE).is_err());
    }
}
