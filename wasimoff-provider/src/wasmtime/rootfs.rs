//! A task's root directory: the rootfs zip unpacked into a fresh temporary directory, and the
//! artifacts zipped back up from it after the run.
//!
//! Unpacking is defensive: at most `max_entries` entries; the bytes actually written are
//! counted against `max_bytes` (a zip bomb's headers may claim anything); entry names must be
//! relative paths without `..` or backslashes; symlinks and duplicate entries are rejected.
//! Every error names the offending entry. Collecting artifacts never follows a symlink the
//! guest may have created (they are skipped), so nothing outside the root can leak out.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tempfile::TempDir;
use wasimoff_core::executor::ExecError;
use zip::ZipArchive;
use zip::write::{SimpleFileOptions, ZipWriter};

// The rootfs and artifact path guard, the same as the browser's WASI host.
use wasimoff_wasi::fs::components;

/// Empty task directories kept for reuse: creating and removing a directory costs more than
/// running a small guest, so a directory the guest left empty goes back to the pool.
#[derive(Debug)]
pub(crate) struct DirPool {
    parent: Option<PathBuf>,
    capacity: usize,
    free: Mutex<Vec<TempDir>>,
}

impl DirPool {
    /// A pool of at most `capacity` idle directories under `parent` (or the temp dir).
    pub(crate) fn new(parent: Option<PathBuf>, capacity: usize) -> Self {
        DirPool {
            parent,
            capacity,
            free: Mutex::default(),
        }
    }

    /// An empty directory for a task.
    pub(crate) fn acquire(&self) -> Result<TempDir, ExecError> {
        if let Some(dir) = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(dir);
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("wasimoff-task-");
        match &self.parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|e| ExecError::Host(format!("creating the task directory: {e}")))
    }

    /// Returns a directory after its task: kept if it is empty and there is room, else removed.
    pub(crate) fn release(&self, dir: TempDir) {
        let empty = fs::read_dir(dir.path()).is_ok_and(|mut entries| entries.next().is_none());
        if empty {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < self.capacity {
                free.push(dir);
                return;
            }
        }
        let path = dir.path().to_owned();
        if let Err(e) = dir.close() {
            tracing::warn!(path = %path.display(), "removing a task directory: {e}");
        }
    }
}

fn invalid(entry: &str, why: impl std::fmt::Display) -> ExecError {
    ExecError::InvalidRootfs(format!("entry {entry:?}: {why}"))
}

/// Unpacks the zip `bytes` into the (empty) directory `root`.
pub(crate) fn unpack(
    bytes: &[u8],
    root: &Path,
    max_entries: usize,
    max_bytes: u64,
) -> Result<(), ExecError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ExecError::InvalidRootfs(format!("not a readable zip: {e}")))?;
    if archive.len() > max_entries {
        return Err(ExecError::InvalidRootfs(format!(
            "{} entries, more than the limit of {max_entries}",
            archive.len()
        )));
    }
    let mut written: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ExecError::InvalidRootfs(format!("entry #{index}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if entry.is_symlink() {
            return Err(invalid(&name, "symbolic links are not allowed"));
        }
        if name.starts_with('/') {
            return Err(invalid(&name, "absolute paths are not allowed"));
        }
        let parts = components(&name)
            .ok_or_else(|| invalid(&name, "the path leaves the root or is malformed"))?;
        let path: PathBuf = parts
            .iter()
            .fold(root.to_owned(), |path, part| path.join(part));
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(|e| invalid(&name, e))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| invalid(&name, e))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => invalid(&name, "duplicate entry"),
                _ => invalid(&name, e),
            })?;
        let remaining = max_bytes.saturating_sub(written);
        let copied = io::copy(
            &mut (&mut entry).take(remaining.saturating_add(1)),
            &mut file,
        )
        .map_err(|e| invalid(&name, e))?;
        written = written.saturating_add(copied);
        if written > max_bytes {
            return Err(ExecError::InvalidRootfs(format!(
                "unpacks to more than the limit of {max_bytes} bytes (at entry {name:?})"
            )));
        }
    }
    Ok(())
}

/// Resolves an artifact path below `root` without following symlinks; `None` if it leaves
/// the root, is malformed, or passes through a symlink.
fn resolve(root: &Path, artifact: &str) -> Option<(PathBuf, String)> {
    let parts = components(artifact)?;
    let mut path = root.to_owned();
    for part in &parts {
        path.push(part);
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return None;
        }
    }
    Some((path, parts.join("/")))
}

/// Zips the `artifacts` (paths relative to `root`; files, or directories recursively) with
/// deflate. Names in the zip are the normalised relative paths (`out/a.txt`, directories
/// end in `/`).
pub(crate) fn collect_artifacts(
    root: &Path,
    artifacts: &[String],
    max_bytes: u64,
) -> Result<Bytes, ExecError> {
    let mut zip = Collector {
        writer: ZipWriter::new(Cursor::new(Vec::new())),
        names: BTreeSet::new(),
        total: 0,
        max_bytes,
    };
    for artifact in artifacts {
        let (path, name) = resolve(root, artifact).ok_or_else(|| {
            ExecError::InvalidTask(format!(
                "artifact path {artifact:?} is empty, leaves the root or passes through a symlink"
            ))
        })?;
        let meta = fs::symlink_metadata(&path)
            .map_err(|_| ExecError::MissingArtifact(artifact.clone()))?;
        if meta.is_dir() {
            zip.add_dir(&path, &name)?;
        } else if meta.is_file() {
            zip.add_file(&path, &name, meta.len())?;
        } else {
            return Err(ExecError::MissingArtifact(artifact.clone()));
        }
    }
    let bytes = zip
        .writer
        .finish()
        .map_err(|e| ExecError::Host(format!("writing the artifacts zip: {e}")))?
        .into_inner();
    Ok(Bytes::from(bytes))
}

struct Collector {
    writer: ZipWriter<Cursor<Vec<u8>>>,
    names: BTreeSet<String>,
    total: u64,
    max_bytes: u64,
}

fn host_error(path: &Path, e: impl std::fmt::Display) -> ExecError {
    ExecError::Host(format!("collecting artifact {}: {e}", path.display()))
}

impl Collector {
    fn add_file(&mut self, path: &Path, name: &str, len: u64) -> Result<(), ExecError> {
        if !self.names.insert(name.to_owned()) {
            return Ok(());
        }
        self.total = self.total.saturating_add(len);
        if self.total > self.max_bytes {
            return Err(ExecError::ArtifactsTooLarge(format!(
                "more than {} bytes (at {name:?})",
                self.max_bytes
            )));
        }
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        self.writer
            .start_file(name, options)
            .map_err(|e| host_error(path, e))?;
        let file = fs::File::open(path).map_err(|e| host_error(path, e))?;
        // Read at most what was measured, in case the file grows meanwhile.
        let copied =
            io::copy(&mut file.take(len), &mut self.writer).map_err(|e| host_error(path, e))?;
        self.writer.flush().map_err(|e| host_error(path, e))?;
        debug_assert!(copied <= len);
        Ok(())
    }

    /// Adds a directory and everything below it, depth first in name order (iteratively, so a
    /// deeply nested tree cannot overflow the stack).
    fn add_dir(&mut self, path: &Path, name: &str) -> Result<(), ExecError> {
        let mut pending = vec![(path.to_owned(), name.to_owned())];
        while let Some((dir, dir_name)) = pending.pop() {
            let entry_name = format!("{dir_name}/");
            if self.names.insert(entry_name.clone()) {
                self.writer
                    .add_directory(entry_name, SimpleFileOptions::default())
                    .map_err(|e| host_error(&dir, e))?;
            }
            let mut entries = fs::read_dir(&dir)
                .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
                .map_err(|e| host_error(&dir, e))?;
            entries.sort_by_key(fs::DirEntry::file_name);
            let mut subdirs = Vec::new();
            for entry in entries {
                let child_path = entry.path();
                let Some(child) = entry.file_name().to_str().map(str::to_owned) else {
                    tracing::warn!(path = %child_path.display(), "skipping artifact with a non-UTF-8 name");
                    continue;
                };
                let child_name = format!("{dir_name}/{child}");
                let meta =
                    fs::symlink_metadata(&child_path).map_err(|e| host_error(&child_path, e))?;
                if meta.is_dir() {
                    subdirs.push((child_path, child_name));
                } else if meta.is_file() {
                    self.add_file(&child_path, &child_name, meta.len())?;
                }
                // Symlinks and special files are skipped: never follow what the guest created.
            }
            pending.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}
