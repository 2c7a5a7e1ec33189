//! Zip archives: a directory zipped in memory (`--rootfs DIR`) and artifacts extracted safely
//! (`--out DIR`).

use std::{
    io::{Cursor, Read, Write},
    path::{Component, Path, PathBuf},
};

use wasimoff_client::Error;
use zip::{ZipArchive, ZipWriter, write::SimpleFileOptions};

fn local(e: impl std::fmt::Display) -> Error {
    Error::Local(e.to_string())
}

/// Zips the contents of `dir` (recursively; symlinks are followed) with deflate.
pub(crate) fn zip_dir(dir: &Path) -> Result<Vec<u8>, Error> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let mut entries = std::fs::read_dir(&current)
            .map_err(|e| local(format!("cannot read {}: {e}", current.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| local(format!("cannot read {}: {e}", current.display())))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let relative = path
                .strip_prefix(dir)
                .map_err(local)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if path.is_dir() {
                writer
                    .add_directory(format!("{relative}/"), options)
                    .map_err(local)?;
                pending.push(path);
            } else {
                writer.start_file(relative, options).map_err(local)?;
                let bytes = std::fs::read(&path)
                    .map_err(|e| local(format!("cannot read {}: {e}", path.display())))?;
                writer.write_all(&bytes).map_err(local)?;
            }
        }
    }
    Ok(writer.finish().map_err(local)?.into_inner())
}

/// The path an archive entry is written to under the output directory, or `None` when the
/// name could escape it (`..`, drive letters, NUL). A leading `/` is dropped: artifacts are
/// named by their absolute path in the task's filesystem.
pub(crate) fn safe_path(name: &str) -> Option<PathBuf> {
    if name.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return None,
            part if part.contains(':') => return None,
            part => {
                // Anything that the platform parses as more than one plain component.
                let mut components = Path::new(part).components();
                match (components.next(), components.next()) {
                    (Some(Component::Normal(_)), None) => out.push(part),
                    _ => return None,
                }
            }
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Extracts a zip into `dir` (created if needed), refusing entries that would escape it.
/// Returns the files written.
pub(crate) fn extract(zip: &[u8], dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut archive = ZipArchive::new(Cursor::new(zip))
        .map_err(|e| local(format!("the artifacts are not a valid zip: {e}")))?;
    // Check every name before writing anything.
    let mut targets = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(local)?;
        let name = entry.name().to_owned();
        let Some(relative) = safe_path(&name) else {
            return Err(local(format!(
                "refusing to extract artifact {name:?}: its path leaves the output directory"
            )));
        };
        if entry.is_symlink() {
            return Err(local(format!(
                "refusing to extract artifact {name:?}: it is a symlink"
            )));
        }
        targets.push((relative, entry.is_dir()));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| local(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (i, (relative, is_dir)) in targets.into_iter().enumerate() {
        let target = dir.join(&relative);
        if is_dir {
            std::fs::create_dir_all(&target)
                .map_err(|e| local(format!("cannot create {}: {e}", target.display())))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| local(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut entry = archive.by_index(i).map_err(local)?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(local)?;
        std::fs::write(&target, bytes)
            .map_err(|e| local(format!("cannot write {}: {e}", target.display())))?;
        written.push(target);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert_eq!(
            safe_path("/greeting.txt"),
            Some(PathBuf::from("greeting.txt"))
        );
        assert_eq!(safe_path("a/b/c.txt"), Some(PathBuf::from("a/b/c.txt")));
        assert_eq!(safe_path("./a//b"), Some(PathBuf::from("a/b")));
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "C:/x",
            "c:x",
            "a\0b",
            "..\\x",
            "",
            "/",
        ] {
            assert_eq!(safe_path(bad), None, "{bad:?}");
        }
    }
}
