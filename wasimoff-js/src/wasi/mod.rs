//! A WASI preview 1 host in plain Rust: ABI constants and layouts ([`abi`]), the in-memory
//! file system with rootfs unpacking and artifact zipping ([`fs`]), and the system calls over
//! an abstract guest memory and platform ([`ctx`]). Nothing here depends on JS, so it builds
//! and is unit-tested on every target; `crate::host` binds it to `WebAssembly` in browsers.

pub mod abi;
pub mod ctx;
pub mod fs;

#[cfg(test)]
mod tests;
