//! Zip archives as pages use them: the files of a task's root directory (`rootfs`) packed
//! into one, and the files of a result's `artifacts` unpacked from one. The npm package
//! exports these as `zipFiles` and `unzipFiles`.

use std::io::{Cursor, Read as _, Write as _};

use wasimoff_wasi::fs::components;
use zip::write::{SimpleFileOptions, ZipWriter};
use zip::{CompressionMethod, ZipArchive};

/// Packs `files` (path, contents) into a zip archive, uncompressed (stored): packing is a
/// copy, and the media files pages hand to guests compress badly anyway. A leading `/` is
/// dropped; a path that leaves the root (`..`), is empty or appears twice is an error.
pub fn pack<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Vec<u8>, String> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        // Entries of 4 GiB and more need the zip64 format.
        .large_file(false);
    let mut names = std::collections::BTreeSet::new();
    for (path, contents) in files {
        let name = components(path)
            .ok_or_else(|| format!("{path:?} is not a path inside the archive"))?
            .join("/");
        if !names.insert(name.clone()) {
            return Err(format!("{path:?} is in the archive twice"));
        }
        let options = options.large_file(contents.len() as u64 >= u64::from(u32::MAX));
        writer
            .start_file(name, options)
            .and_then(|()| writer.write_all(contents).map_err(Into::into))
            .map_err(|e| format!("packing {path:?}: {e}"))?;
    }
    writer
        .finish()
        .map(Cursor::into_inner)
        .map_err(|e| format!("packing: {e}"))
}

/// The files of the zip archive `zip` (path, contents) in archive order, directories left
/// out. Refuses archives whose files add up to more than `max_bytes` (counted while reading,
/// not trusted from the archive's headers), names that leave the root, and unreadable data.
pub fn unpack(zip: &[u8], max_bytes: u64) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("not a readable zip: {e}"))?;
    let mut files = Vec::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| format!("entry {index}: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        let path = components(&name)
            .ok_or_else(|| format!("{name:?} is not a path inside the archive"))?
            .join("/");
        let left = max_bytes.saturating_sub(total);
        let mut contents = Vec::new();
        // One byte more than is left tells a file that is too large from one that fits.
        entry
            .by_ref()
            .take(left.saturating_add(1))
            .read_to_end(&mut contents)
            .map_err(|e| format!("reading {name:?}: {e}"))?;
        total = total.saturating_add(contents.len() as u64);
        if total > max_bytes {
            return Err(format!(
                "the archive unpacks to more than {max_bytes} bytes (at {name:?})"
            ));
        }
        files.push((path, contents));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_files_unpack_to_the_same_files() {
        let video = vec![7u8; 100_000];
        let zip = pack([
            ("/input.mp4", video.as_slice()),
            ("dir/notes.txt", b"hello".as_slice()),
        ])
        .unwrap();
        // Stored: the archive is the files plus headers.
        assert!(zip.len() < 100_000 + 400, "{}", zip.len());
        let files = unpack(&zip, 1 << 20).unwrap();
        assert_eq!(
            files,
            [
                ("input.mp4".to_owned(), video),
                ("dir/notes.txt".to_owned(), b"hello".to_vec())
            ]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in ["../up", "", "/", "a/../../b", "back\\slash"] {
            let err = pack([(path, b"x".as_slice())]).unwrap_err();
            assert!(err.contains("not a path"), "{path:?}: {err}");
        }
        let err = pack([("a", b"1".as_slice()), ("/a", b"2".as_slice())]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn unpacking_stops_at_the_byte_limit() {
        // Deflated, so that the archive is small and only reading finds out the size.
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        writer.start_file("zeros", deflated).unwrap();
        writer.write_all(&vec![0u8; 1 << 20]).unwrap();
        let zip = writer.finish().unwrap().into_inner();
        assert!(zip.len() < 10_000);
        let err = unpack(&zip, 1000).unwrap_err();
        assert!(err.contains("more than 1000 bytes"), "{err}");
        assert_eq!(unpack(&zip, 1 << 20).unwrap()[0].1.len(), 1 << 20);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(
            unpack(b"not a zip", 1000)
                .unwrap_err()
                .contains("not a readable zip")
        );
    }
}
