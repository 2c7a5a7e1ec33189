//! The guest's in-memory file system: a tree of directories and files, the rootfs zip
//! unpacked into it and the artifacts zipped back out. Pure Rust, no JS.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Cursor, Read, Write};

use zip::ZipArchive;
use zip::write::{SimpleFileOptions, ZipWriter};

use crate::abi::{Errno, errno, filetype};

/// An inode number (index into the node arena).
pub type Ino = usize;

/// The root directory's inode.
pub const ROOT: Ino = 0;

/// A file or directory.
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory: its entries in name order and its parent (the root is its own parent).
    Dir {
        /// Name to inode.
        entries: BTreeMap<String, Ino>,
        /// The parent directory.
        parent: Ino,
    },
    /// A regular file's contents.
    File(Vec<u8>),
    /// A symbolic link and its target (a relative path: absolute targets are refused).
    Symlink(String),
}

/// How many symbolic links one path may go through before it is `ELOOP`.
const MAX_SYMLINKS: usize = 40;

/// Limits for unpacking a rootfs. The defaults are both executors' (the native one takes them
/// from here).
#[derive(Debug, Clone, Copy)]
pub struct RootfsLimits {
    /// Most entries in the zip.
    pub max_entries: usize,
    /// Most bytes written while unpacking.
    pub max_bytes: u64,
}

impl Default for RootfsLimits {
    fn default() -> Self {
        RootfsLimits {
            max_entries: 10_000,
            max_bytes: 1 << 30,
        }
    }
}

/// An in-memory tree. Unlinked nodes stay in the arena (open descriptors keep working) until
/// the task ends.
#[derive(Debug, Clone)]
pub struct Fs {
    nodes: Vec<Node>,
    /// Each node's access, modification and status-change times (ns since the epoch).
    times: Vec<[u64; 3]>,
    /// Each file's and symbolic link's number of directory entries (hard links).
    links: Vec<u64>,
    /// Times to set to "now" (bits [`ATIME`], [`MTIME`], [`CTIME`] per node) once the current
    /// call ends: [`Fs::settle`] reads the clock then, and only if anything changed (in
    /// browsers a clock read crosses into JS; most calls, writes to stdout above all, change
    /// nothing).
    pending: Vec<(Ino, u8)>,
}

/// The access time, in [`Fs`]'s pending stamps.
const ATIME: u8 = 1;
/// The modification time, in [`Fs`]'s pending stamps.
const MTIME: u8 = 2;
/// The status-change time, in [`Fs`]'s pending stamps.
const CTIME: u8 = 4;

/// A time to set on a node: a given one, or the time of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// This many nanoseconds since the epoch.
    At(u64),
    /// The time the change is settled ([`Fs::settle`]).
    Now,
}

impl Default for Fs {
    fn default() -> Self {
        Fs::new()
    }
}

/// Splits a relative path into its components for the rootfs and artifacts: `.` and empty
/// parts are dropped, a leading `/` is allowed, `..`, backslashes and NUL are refused (`None`),
/// and so is a path with no components. The one path guard of both executors: the browser's
/// (this crate) and the native one (`wasimoff-provider`'s rootfs unpacking and artifacts).
pub fn components(path: &str) -> Option<Vec<&str>> {
    if path.contains(['\\', '\0']) {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts)
}

impl Fs {
    /// An empty root directory.
    pub fn new() -> Self {
        Fs {
            nodes: vec![Node::Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
            }],
            times: vec![[0; 3]],
            links: vec![1],
            pending: Vec::new(),
        }
    }

    /// The node behind `ino`.
    pub fn node(&self, ino: Ino) -> &Node {
        &self.nodes[ino]
    }

    /// The node behind `ino`, mutably.
    pub fn node_mut(&mut self, ino: Ino) -> &mut Node {
        &mut self.nodes[ino]
    }

    /// The access, modification and status-change times of `ino`.
    pub fn times(&self, ino: Ino) -> [u64; 3] {
        self.times[ino]
    }

    /// Sets the access and/or modification time of `ino` (the status-change time becomes now).
    pub fn set_times(&mut self, ino: Ino, atim: Option<SetTime>, mtim: Option<SetTime>) {
        let mut now = CTIME;
        for (time, index, bit) in [(atim, 0, ATIME), (mtim, 1, MTIME)] {
            match time {
                Some(SetTime::At(value)) => self.times[ino][index] = value,
                Some(SetTime::Now) => now |= bit,
                None => {}
            }
        }
        self.pending.push((ino, now));
    }

    /// Marks `ino` modified now (its contents or entries changed).
    pub fn touch(&mut self, ino: Ino) {
        self.pending.push((ino, MTIME | CTIME));
    }

    /// Gives every time changed since the last call the current time, read from `clock` only
    /// if there is any. The system calls settle after each call; whoever changes the tree
    /// directly (unpacking a rootfs) settles before the guest looks.
    pub fn settle(&mut self, clock: impl FnOnce() -> u64) {
        if self.pending.is_empty() {
            return;
        }
        let now = clock();
        for (ino, bits) in self.pending.drain(..) {
            let times = &mut self.times[ino];
            for (index, bit) in [(0, ATIME), (1, MTIME), (2, CTIME)] {
                if bits & bit != 0 {
                    times[index] = now;
                }
            }
        }
    }

    /// Whether `ino` is a directory.
    pub fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes[ino], Node::Dir { .. })
    }

    /// Whether `ino` is a symbolic link.
    pub fn is_symlink(&self, ino: Ino) -> bool {
        matches!(self.nodes[ino], Node::Symlink(_))
    }

    /// The WASI file type of `ino`.
    pub fn filetype(&self, ino: Ino) -> u8 {
        match self.nodes[ino] {
            Node::Dir { .. } => filetype::DIRECTORY,
            Node::File(_) => filetype::REGULAR_FILE,
            Node::Symlink(_) => filetype::SYMBOLIC_LINK,
        }
    }

    /// The size of a file, or the length of a link's target (0 for directories).
    pub fn size(&self, ino: Ino) -> u64 {
        match &self.nodes[ino] {
            Node::File(data) => data.len() as u64,
            Node::Symlink(target) => target.len() as u64,
            Node::Dir { .. } => 0,
        }
    }

    /// The number of hard links to `ino`: its directory entries, and for a directory its `.`
    /// and the `..` of each subdirectory.
    pub fn nlink(&self, ino: Ino) -> u64 {
        match &self.nodes[ino] {
            Node::Dir { entries, .. } => {
                2 + entries
                    .values()
                    .filter(|&&child| self.is_dir(child))
                    .count() as u64
            }
            _ => self.links[ino],
        }
    }

    /// The entries of a directory.
    pub fn entries(&self, ino: Ino) -> Result<&BTreeMap<String, Ino>, Errno> {
        match &self.nodes[ino] {
            Node::Dir { entries, .. } => Ok(entries),
            _ => Err(errno::NOTDIR),
        }
    }

    fn entries_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<String, Ino>, Errno> {
        match &mut self.nodes[ino] {
            Node::Dir { entries, .. } => Ok(entries),
            _ => Err(errno::NOTDIR),
        }
    }

    /// The parent of a directory.
    pub fn parent(&self, ino: Ino) -> Ino {
        match &self.nodes[ino] {
            Node::Dir { parent, .. } => *parent,
            _ => ROOT,
        }
    }

    /// Walks the components of a rootfs or artifact path (no `..`: see [`components`]) from
    /// `base`, following no symbolic link (a link on the way is `ENOTDIR`).
    fn walk(&self, base: Ino, parts: &[&str]) -> Result<Ino, Errno> {
        let mut at = base;
        for part in parts {
            at = *self.entries(at)?.get(*part).ok_or(errno::NOENT)?;
        }
        Ok(at)
    }

    /// Resolves the WASI path `path` from the directory `base`, never above it: absolute
    /// paths and a `..` (or a link's target) that would leave `base`'s tree are `EPERM`, as
    /// under wasmtime (a descriptor only reaches below itself). Symbolic links on the way are
    /// followed, and the last component's too when `follow`; more than 40 links is `ELOOP`.
    /// A trailing `/` requires a directory (`ENOTDIR`).
    pub fn lookup(&self, base: Ino, path: &str, follow: bool) -> Result<Ino, Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.starts_with('/') {
            return Err(errno::PERM);
        }
        self.entries(base)?;
        // The directories from `base` to where the walk is; `..` pops, never past `base`.
        let mut stack = vec![base];
        let mut queue: VecDeque<String> = path.split('/').map(str::to_owned).collect();
        let mut followed = 0;
        let mut result = base;
        while let Some(part) = queue.pop_front() {
            let at = *stack.last().unwrap_or(&base);
            match part.as_str() {
                "" | "." => result = at,
                ".." => {
                    if stack.len() == 1 {
                        return Err(errno::PERM);
                    }
                    stack.pop();
                    result = *stack.last().unwrap_or(&base);
                }
                name => {
                    let child = *self.entries(at)?.get(name).ok_or(errno::NOENT)?;
                    // Only `/`s follow: this is the last component.
                    let last = queue.iter().all(String::is_empty);
                    let trailing_slash = !queue.is_empty();
                    match &self.nodes[child] {
                        Node::Symlink(target) if !last || follow || trailing_slash => {
                            followed += 1;
                            if followed > MAX_SYMLINKS {
                                return Err(errno::LOOP);
                            }
                            if target.starts_with('/') {
                                return Err(errno::PERM);
                            }
                            for part in target.split('/').rev() {
                                queue.push_front(part.to_owned());
                            }
                            result = at;
                        }
                        Node::Dir { .. } => {
                            stack.push(child);
                            result = child;
                        }
                        _ if !last || trailing_slash => return Err(errno::NOTDIR),
                        _ => result = child,
                    }
                }
            }
        }
        Ok(result)
    }

    /// [`Fs::lookup`], following a link in the last component too.
    pub fn resolve(&self, base: Ino, path: &str) -> Result<Ino, Errno> {
        self.lookup(base, path, true)
    }

    /// The directory that holds the last component of `path`, and that component.
    pub fn resolve_parent<'p>(&self, base: Ino, path: &'p str) -> Result<(Ino, &'p str), Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.starts_with('/') {
            return Err(errno::PERM);
        }
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        let parent = if dir.is_empty() {
            base
        } else {
            self.lookup(base, dir, true)?
        };
        self.entries(parent)?;
        Ok((parent, name))
    }

    fn push(&mut self, node: Node) -> Ino {
        self.nodes.push(node);
        self.times.push([0; 3]);
        self.links.push(1);
        let ino = self.nodes.len() - 1;
        self.pending.push((ino, ATIME | MTIME | CTIME));
        ino
    }

    /// Creates the symbolic link `name` in `dir` to `target` (which must be relative:
    /// `EPERM` otherwise, as under wasmtime).
    pub fn create_symlink(&mut self, dir: Ino, name: &str, target: &str) -> Result<Ino, Errno> {
        check_name(name)?;
        if target.starts_with('/') {
            return Err(errno::PERM);
        }
        if self.entries(dir)?.contains_key(name) {
            return Err(errno::EXIST);
        }
        let ino = self.push(Node::Symlink(target.to_owned()));
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.touch(dir);
        Ok(ino)
    }

    /// Adds the entry `name` in `dir` for the existing file or link `ino` (a hard link;
    /// directories cannot have one: `EPERM`).
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &str) -> Result<(), Errno> {
        check_name(name)?;
        if self.is_dir(ino) {
            return Err(errno::PERM);
        }
        if self.entries(dir)?.contains_key(name) {
            return Err(errno::EXIST);
        }
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.links[ino] += 1;
        self.pending.push((ino, CTIME));
        self.touch(dir);
        Ok(())
    }

    /// The target of the symbolic link `ino` (`EINVAL` for anything else).
    pub fn readlink(&self, ino: Ino) -> Result<&str, Errno> {
        match &self.nodes[ino] {
            Node::Symlink(target) => Ok(target),
            _ => Err(errno::INVAL),
        }
    }

    /// Creates an empty file `name` in `dir` and returns it.
    pub fn create_file(&mut self, dir: Ino, name: &str) -> Result<Ino, Errno> {
        check_name(name)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(errno::EXIST);
        }
        let ino = self.push(Node::File(Vec::new()));
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.touch(dir);
        Ok(ino)
    }

    /// Creates an empty directory `name` in `dir`.
    pub fn create_dir(&mut self, dir: Ino, name: &str) -> Result<Ino, Errno> {
        check_name(name)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(errno::EXIST);
        }
        let ino = self.push(Node::Dir {
            entries: BTreeMap::new(),
            parent: dir,
        });
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.touch(dir);
        Ok(ino)
    }

    /// Removes the file `name` from `dir`.
    pub fn unlink_file(&mut self, dir: Ino, name: &str) -> Result<(), Errno> {
        let ino = *self.entries(dir)?.get(name).ok_or(errno::NOENT)?;
        if self.is_dir(ino) {
            return Err(errno::ISDIR);
        }
        self.entries_mut(dir)?.remove(name);
        self.links[ino] = self.links[ino].saturating_sub(1);
        self.touch(dir);
        Ok(())
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn remove_dir(&mut self, dir: Ino, name: &str) -> Result<(), Errno> {
        check_name(name)?;
        let ino = *self.entries(dir)?.get(name).ok_or(errno::NOENT)?;
        if !self.entries(ino)?.is_empty() {
            return Err(errno::NOTEMPTY);
        }
        self.entries_mut(dir)?.remove(name);
        self.touch(dir);
        Ok(())
    }

    /// Renames `from_dir/from` to `to_dir/to`, replacing a file or an empty directory there.
    pub fn rename(
        &mut self,
        from_dir: Ino,
        from: &str,
        to_dir: Ino,
        to: &str,
    ) -> Result<(), Errno> {
        check_name(from)?;
        check_name(to)?;
        let ino = *self.entries(from_dir)?.get(from).ok_or(errno::NOENT)?;
        if self.is_dir(ino) {
            // A directory cannot move below itself.
            let mut at = to_dir;
            loop {
                if at == ino {
                    return Err(errno::INVAL);
                }
                if at == ROOT {
                    break;
                }
                at = self.parent(at);
            }
        }
        if let Some(&existing) = self.entries(to_dir)?.get(to) {
            if existing == ino {
                return Ok(());
            }
            match (self.is_dir(ino), self.is_dir(existing)) {
                (true, false) => return Err(errno::NOTDIR),
                (false, true) => return Err(errno::ISDIR),
                (true, true) if !self.entries(existing)?.is_empty() => {
                    return Err(errno::NOTEMPTY);
                }
                _ => {}
            }
        }
        self.entries_mut(from_dir)?.remove(from);
        if let Some(replaced) = self.entries_mut(to_dir)?.insert(to.to_owned(), ino) {
            self.links[replaced] = self.links[replaced].saturating_sub(1);
        }
        if let Node::Dir { parent, .. } = &mut self.nodes[ino] {
            *parent = to_dir;
        }
        self.touch(from_dir);
        self.touch(to_dir);
        Ok(())
    }

    /// Unpacks a rootfs zip into this (empty) tree. Errors name the offending entry.
    pub fn unpack_zip(&mut self, bytes: &[u8], limits: RootfsLimits) -> Result<(), String> {
        let mut archive =
            ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip: {e}"))?;
        if archive.len() > limits.max_entries {
            return Err(format!(
                "{} entries, more than the limit of {}",
                archive.len(),
                limits.max_entries
            ));
        }
        let invalid = |name: &str, why: &dyn std::fmt::Display| format!("entry {name:?}: {why}");
        let mut written: u64 = 0;
        for index in 0..archive.len() {
            let mut entry = archive
                .by_index(index)
                .map_err(|e| format!("entry #{index}: {e}"))?;
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            if entry.is_symlink() {
                return Err(invalid(&name, &"symbolic links are not allowed"));
            }
            if name.starts_with('/') {
                return Err(invalid(&name, &"absolute paths are not allowed"));
            }
            let parts = components(&name)
                .ok_or_else(|| invalid(&name, &"the path leaves the root or is malformed"))?;
            let is_dir = entry.is_dir();
            let (last, dirs) = match parts.split_last() {
                Some(split) => split,
                None => return Err(invalid(&name, &"empty path")),
            };
            let mut at = ROOT;
            let all_dirs: Vec<&str> = if is_dir { parts.clone() } else { dirs.to_vec() };
            for part in all_dirs {
                at = match self
                    .entries(at)
                    .map_err(|_| invalid(&name, &"not a directory"))?
                    .get(part)
                {
                    Some(&ino) if self.is_dir(ino) => ino,
                    Some(_) => return Err(invalid(&name, &"a file is in the way")),
                    None => self
                        .create_dir(at, part)
                        .map_err(|e| invalid(&name, &format!("errno {e}")))?,
                };
            }
            if is_dir {
                continue;
            }
            let mut data = Vec::new();
            let remaining = limits.max_bytes.saturating_sub(written);
            let copied = (&mut entry)
                .take(remaining.saturating_add(1))
                .read_to_end(&mut data)
                .map_err(|e| invalid(&name, &e))?;
            written = written.saturating_add(copied as u64);
            if written > limits.max_bytes {
                return Err(format!(
                    "unpacks to more than the limit of {} bytes (at entry {name:?})",
                    limits.max_bytes
                ));
            }
            let ino = self.create_file(at, last).map_err(|e| match e {
                errno::EXIST => invalid(&name, &"duplicate entry"),
                e => invalid(&name, &format!("errno {e}")),
            })?;
            self.nodes[ino] = Node::File(data);
        }
        Ok(())
    }

    /// Zips the artifacts (paths relative to `/`; files, or directories recursively: the
    /// directory, its files in name order, then its subdirectories in name order) with
    /// deflate, as the native executor does.
    pub fn collect_artifacts(
        &self,
        artifacts: &[String],
        max_bytes: u64,
    ) -> Result<Vec<u8>, ArtifactError> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let host = |e: &dyn std::fmt::Display| ArtifactError::Host(e.to_string());
        let mut add_file = |writer: &mut ZipWriter<Cursor<Vec<u8>>>,
                            name: &str,
                            data: &[u8]|
         -> Result<(), ArtifactError> {
            if !names.insert(name.to_owned()) {
                return Ok(());
            }
            total = total.saturating_add(data.len() as u64);
            if total > max_bytes {
                return Err(ArtifactError::TooLarge(format!(
                    "more than {max_bytes} bytes (at {name:?})"
                )));
            }
            writer.start_file(name, options).map_err(|e| host(&e))?;
            writer.write_all(data).map_err(|e| host(&e))?;
            Ok(())
        };
        let mut dir_names = BTreeSet::new();
        for artifact in artifacts {
            let parts = components(artifact).ok_or_else(|| {
                ArtifactError::InvalidPath(format!(
                    "artifact path {artifact:?} is empty, leaves the root or is malformed"
                ))
            })?;
            let ino = self
                .walk(ROOT, &parts)
                .map_err(|_| ArtifactError::Missing(artifact.clone()))?;
            let name = parts.join("/");
            match &self.nodes[ino] {
                Node::File(data) => add_file(&mut writer, &name, data)?,
                // A link is never followed out of the task (as natively).
                Node::Symlink(_) => return Err(ArtifactError::Missing(artifact.clone())),
                Node::Dir { .. } => {
                    let mut pending = vec![(ino, name)];
                    while let Some((dir, dir_name)) = pending.pop() {
                        let entry_name = format!("{dir_name}/");
                        if dir_names.insert(entry_name.clone()) {
                            writer
                                .add_directory(entry_name, SimpleFileOptions::default())
                                .map_err(|e| host(&e))?;
                        }
                        let mut subdirs = Vec::new();
                        for (child, &child_ino) in self.entries(dir).map_err(|e| host(&e))? {
                            let child_name = format!("{dir_name}/{child}");
                            match &self.nodes[child_ino] {
                                Node::File(data) => add_file(&mut writer, &child_name, data)?,
                                Node::Dir { .. } => subdirs.push((child_ino, child_name)),
                                // Links are skipped (as natively).
                                Node::Symlink(_) => {}
                            }
                        }
                        pending.extend(subdirs.into_iter().rev());
                    }
                }
            }
        }
        Ok(writer.finish().map_err(|e| host(&e))?.into_inner())
    }
}

fn check_name(name: &str) -> Result<(), Errno> {
    match name {
        "" => Err(errno::NOENT),
        "." | ".." => Err(errno::INVAL),
        _ => Ok(()),
    }
}

/// Why artifacts could not be collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactError {
    /// The path is empty or leaves the root.
    InvalidPath(String),
    /// The path does not exist.
    Missing(String),
    /// The artifacts exceed the limit.
    TooLarge(String),
    /// Writing the zip failed.
    Host(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn components_reject_escapes() {
        assert_eq!(components("a/./b//c/"), Some(vec!["a", "b", "c"]));
        assert_eq!(components("/out"), Some(vec!["out"]));
        assert_eq!(components("../evil"), None);
        assert_eq!(components("a/../../evil"), None);
        assert_eq!(components("a\\b"), None);
        assert_eq!(components("a\0b"), None);
        assert_eq!(components(""), None);
        assert_eq!(components("/"), None);
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, contents) in entries {
            if name.ends_with('/') {
                writer
                    .add_directory(*name, SimpleFileOptions::default())
                    .unwrap();
            } else {
                writer
                    .start_file(*name, SimpleFileOptions::default())
                    .unwrap();
                writer.write_all(contents).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    fn names(zip: &[u8]) -> Vec<String> {
        let mut archive = ZipArchive::new(Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| archive.by_index(i).unwrap().name().to_owned())
            .collect()
    }

    #[test]
    fn unpack_and_collect() {
        let mut fs = Fs::new();
        fs.unpack_zip(
            &zip_of(&[
                ("d/b.txt", b"b"),
                ("d/a/x.txt", b"x"),
                ("d/a/y/z.txt", b"z"),
                ("e/", b""),
            ]),
            RootfsLimits::default(),
        )
        .unwrap();
        let d = fs.resolve(ROOT, "d").unwrap();
        assert!(fs.is_dir(d));
        let z = fs.resolve(d, "a/y/../y/z.txt").unwrap();
        assert_eq!(fs.size(z), 1);
        assert_eq!(fs.resolve(ROOT, ".."), Err(errno::PERM));
        assert_eq!(fs.resolve(ROOT, "/d"), Err(errno::PERM));
        assert_eq!(fs.resolve(ROOT, "d/b.txt/"), Err(errno::NOTDIR));
        assert_eq!(fs.resolve(ROOT, "nope"), Err(errno::NOENT));
        let zip = fs
            .collect_artifacts(&["d".into(), "/e".into()], 1 << 20)
            .unwrap();
        assert_eq!(
            names(&zip),
            [
                "d/",
                "d/b.txt",
                "d/a/",
                "d/a/x.txt",
                "d/a/y/",
                "d/a/y/z.txt",
                "e/"
            ]
        );
        assert_eq!(
            fs.collect_artifacts(&["nope".into()], 1 << 20),
            Err(ArtifactError::Missing("nope".into()))
        );
        assert!(matches!(
            fs.collect_artifacts(&["../x".into()], 1 << 20),
            Err(ArtifactError::InvalidPath(_))
        ));
        assert!(matches!(
            fs.collect_artifacts(&["d".into()], 2),
            Err(ArtifactError::TooLarge(_))
        ));
    }

    #[test]
    fn rootfs_rejects_bad_entries() {
        for (entry, zip) in [
            ("../evil", zip_of(&[("../evil", b"x")])),
            ("a/../../evil", zip_of(&[("a/../../evil", b"x")])),
            ("/abs", zip_of(&[("/abs", b"x")])),
            ("dup", zip_of(&[("dup", b"x"), ("./dup", b"y")])),
        ] {
            let err = Fs::new()
                .unpack_zip(&zip, RootfsLimits::default())
                .unwrap_err();
            assert!(err.contains(entry), "{entry}: {err}");
        }
        let mut symlink = ZipWriter::new(Cursor::new(Vec::new()));
        symlink
            .add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let zip = symlink.finish().unwrap().into_inner();
        assert!(
            Fs::new()
                .unpack_zip(&zip, RootfsLimits::default())
                .unwrap_err()
                .contains("link")
        );
        assert!(
            Fs::new()
                .unpack_zip(b"not a zip", RootfsLimits::default())
                .is_err()
        );
        let big = zip_of(&[("a", &[0u8; 100][..]), ("b", &[0u8; 100][..])]);
        let limits = RootfsLimits {
            max_entries: 10,
            max_bytes: 150,
        };
        assert!(
            Fs::new()
                .unpack_zip(&big, limits)
                .unwrap_err()
                .contains("limit")
        );
        let limits = RootfsLimits {
            max_entries: 1,
            max_bytes: 1000,
        };
        assert!(
            Fs::new()
                .unpack_zip(&big, limits)
                .unwrap_err()
                .contains("entries")
        );
    }

    #[test]
    fn create_rename_remove() {
        let mut fs = Fs::new();
        let a = fs.create_dir(ROOT, "a").unwrap();
        let f = fs.create_file(a, "f").unwrap();
        assert_eq!(fs.create_file(a, "f"), Err(errno::EXIST));
        assert_eq!(fs.remove_dir(ROOT, "a"), Err(errno::NOTEMPTY));
        fs.rename(a, "f", ROOT, "g").unwrap();
        assert_eq!(fs.resolve(ROOT, "g"), Ok(f));
        let b = fs.create_dir(a, "b").unwrap();
        assert_eq!(fs.rename(ROOT, "a", b, "x"), Err(errno::INVAL));
        fs.rename(a, "b", ROOT, "b").unwrap();
        assert_eq!(fs.resolve(ROOT, "b/.."), Ok(ROOT));
        assert_eq!(fs.unlink_file(ROOT, "b"), Err(errno::ISDIR));
        fs.unlink_file(ROOT, "g").unwrap();
        fs.remove_dir(ROOT, "b").unwrap();
        fs.remove_dir(ROOT, "a").unwrap();
        assert!(fs.entries(ROOT).unwrap().is_empty());
    }
}
