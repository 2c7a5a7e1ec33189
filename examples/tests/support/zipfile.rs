//! One file out of a zip archive (artifacts), for the tests and benches that include this
//! module (`#[path]`).

use std::io::Read as _;

/// The file `name` of a zip archive; panics naming it if it is missing.
pub(crate) fn entry(zip: &[u8], name: &str) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut file = archive
        .by_name(name)
        .unwrap_or_else(|e| panic!("{name} in the zip: {e}"));
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}
