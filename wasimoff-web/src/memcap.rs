//! Memory limits for guests in browsers. The JS API cannot veto `memory.grow`, but a module's
//! own memory may declare a maximum, and then `memory.grow` beyond it fails (returns -1) as the
//! spec demands. So before compiling, [`cap_memory`] rewrites the memory section so that every
//! memory the module defines has a maximum of at most the cap; all other sections are copied
//! byte for byte. A guest's allocator then sees a refused allocation, exactly as under
//! wasmtime with a memory limit.
//!
//! Plain Rust (wasmparser, wasm-encoder): unit-tested natively.

use std::borrow::Cow;

use wasm_encoder::{Encode, EntityType, MemorySection, MemoryType, Module, RawSection};
use wasmparser::{BinaryReader, Parser, Payload};

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
            other => copy_section(&mut module, bytes, &other)?,
        }
    }
    Ok(Cow::Owned(module.finish()))
}

/// The import a guest's memory becomes under [`import_memory`].
pub const MEMORY_IMPORT: (&str, &str) = ("wasimoff", "memory");
/// The custom section [`import_memory`] adds: the memory's limits in pages, as ASCII
/// `"<minimum> <maximum>"` (`-` for no maximum).
pub const MEMORY_SECTION: &str = "wasimoff.memory";

/// `bytes` with its one memory imported (as [`MEMORY_IMPORT`]) instead of defined, so that a
/// worker can hand every instance the same, cleared memory instead of allocating one per task
/// (an allocation the engine frees only at its next garbage collection). The limits go along
/// in a custom section ([`MEMORY_SECTION`]), which the JS API can read. Index 0 stays the
/// memory's index, so nothing else changes. Unchanged (`None`) for modules this does not
/// apply to: more than one memory, an imported, shared or 64-bit memory, no import section.
pub fn import_memory(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut memories = Vec::new();
    let mut imports = None;
    let mut imports_memory = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::MemorySection(reader) => {
                for memory in reader {
                    memories.push(memory.map_err(|e| e.to_string())?);
                }
            }
            Payload::ImportSection(reader) => {
                imports = Some(reader.range());
                for import in reader.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    imports_memory |= matches!(import.ty, wasmparser::TypeRef::Memory(_));
                }
            }
            _ => {}
        }
    }
    let (Some(imports), [memory]) = (imports, memories.as_slice()) else {
        return Ok(None);
    };
    if imports_memory || memory.memory64 || memory.shared || memory.page_size_log2.is_some() {
        return Ok(None);
    }
    let (minimum, maximum) = (memory.initial, memory.maximum);
    // The import section's entries, after the count, plus one for the memory.
    let data = bytes.get(imports.clone()).ok_or("bad import section")?;
    let mut reader = BinaryReader::new(data, imports.start);
    let count = reader.read_var_u32().map_err(|e| e.to_string())?;
    let mut section = Vec::with_capacity(data.len() + 32);
    (count + 1).encode(&mut section);
    section.extend_from_slice(&data[reader.current_position()..]);
    MEMORY_IMPORT.0.encode(&mut section);
    MEMORY_IMPORT.1.encode(&mut section);
    EntityType::Memory(MemoryType {
        minimum,
        maximum,
        memory64: false,
        shared: false,
        page_size_log2: None,
    })
    .encode(&mut section);
    let mut module = Module::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { .. } | Payload::End(_) | Payload::MemorySection(_) => {}
            Payload::ImportSection(_) => {
                module.section(&RawSection {
                    id: 2,
                    data: &section,
                });
            }
            other => copy_section(&mut module, bytes, &other)?,
        }
    }
    let limits = format!(
        "{minimum} {}",
        maximum.map_or_else(|| "-".to_owned(), |m| m.to_string())
    );
    module.section(&wasm_encoder::CustomSection {
        name: MEMORY_SECTION.into(),
        data: limits.as_bytes().into(),
    });
    Ok(Some(module.finish()))
}

/// Copies the section `payload` begins, byte for byte, to `module`. Function bodies come as
/// one code section entry plus one payload per body; the section's range covers them all, so
/// the section is copied once and the bodies are skipped.
fn copy_section(module: &mut Module, bytes: &[u8], payload: &Payload<'_>) -> Result<(), String> {
    if let Payload::CodeSectionEntry(_) = payload {
        return Ok(());
    }
    if let Some((id, range)) = payload.as_section() {
        let data = bytes
            .get(range)
            .ok_or("a section lies outside the module")?;
        module.section(&RawSection { id, data });
    }
    Ok(())
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
    fn imported_memory_keeps_the_module_valid_and_its_limits() {
        let capped = cap_memory(wasimoff_wasi_apps::HELLO, 64 << 20).unwrap();
        let module = import_memory(&capped).unwrap().unwrap();
        let (minimum, maximum) = memory_of(&capped)[0];
        assert_eq!(maximum, Some(1024));
        wasmparser::Validator::new().validate_all(&module).unwrap();
        assert!(memory_of(&module).is_empty(), "the memory is still defined");
        let mut imported = None;
        let mut section = None;
        for payload in Parser::new(0).parse_all(&module) {
            match payload.unwrap() {
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.unwrap();
                        if let wasmparser::TypeRef::Memory(m) = import.ty {
                            imported = Some((import.module, import.name, m.initial, m.maximum));
                        }
                    }
                }
                Payload::CustomSection(c) if c.name() == MEMORY_SECTION => {
                    section = Some(String::from_utf8(c.data().to_vec()).unwrap());
                }
                _ => {}
            }
        }
        assert_eq!(
            imported,
            Some((MEMORY_IMPORT.0, MEMORY_IMPORT.1, minimum, Some(1024)))
        );
        assert_eq!(section, Some(format!("{minimum} 1024")));
        // Modules it does not apply to stay as they are.
        let two = wat::parse_str(r#"(module (import "m" "f" (func)) (memory 1) (memory 1))"#);
        assert!(import_memory(&two.unwrap()).unwrap().is_none());
        let imported = wat::parse_str(r#"(module (import "m" "mem" (memory 1)))"#).unwrap();
        assert!(import_memory(&imported).unwrap().is_none());
        let no_imports = wat::parse_str(r#"(module (memory 1))"#).unwrap();
        assert!(import_memory(&no_imports).unwrap().is_none());
        // Without a maximum.
        let open =
            wat::parse_str(r#"(module (import "m" "f" (func)) (memory (export "memory") 3))"#);
        let module = import_memory(&open.unwrap()).unwrap().unwrap();
        assert!(module.windows(3).any(|w| w == b"3 -"));
        wasmparser::Validator::new().validate_all(&module).unwrap();
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(cap_memory(b"\0asm\x01\0\0\0\x05\xff", PAGE).is_err());
    }
}
