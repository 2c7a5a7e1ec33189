//! The WASI preview 1 system calls over a guest [`Memory`] and a [`Platform`] (clocks, random,
//! sleeping). Pure Rust: the browser host (`crate::host`) plugs in the JS memory and clocks, and
//! the unit tests a `Vec<u8>` and a fake clock.

use std::collections::BTreeMap;

use crate::abi::{self, Errno, errno, filetype, oflags, rights, size};
use crate::fs::{Fs, Ino, Node, ROOT, SetTime};

/// The guest's linear memory as seen from one system call.
pub trait Memory {
    /// Copies `buf.len()` bytes at `ptr` into `buf` (`EFAULT` when out of bounds).
    fn read(&self, ptr: u32, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `data` to `ptr` (`EFAULT` when out of bounds).
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno>;
}

impl Memory for Vec<u8> {
    fn read(&self, ptr: u32, buf: &mut [u8]) -> Result<(), Errno> {
        let start = ptr as usize;
        let src = self.get(start..start + buf.len()).ok_or(errno::FAULT)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let start = ptr as usize;
        self.get_mut(start..start + data.len())
            .ok_or(errno::FAULT)?
            .copy_from_slice(data);
        Ok(())
    }
}

fn read_vec(mem: &dyn Memory, ptr: u32, len: u32) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0; len as usize];
    mem.read(ptr, &mut buf)?;
    Ok(buf)
}
fn read_u32(mem: &dyn Memory, ptr: u32) -> Result<u32, Errno> {
    let mut b = [0; 4];
    mem.read(ptr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}
fn write_u32(mem: &mut dyn Memory, ptr: u32, v: u32) -> Result<(), Errno> {
    mem.write(ptr, &v.to_le_bytes())
}
fn write_u64(mem: &mut dyn Memory, ptr: u32, v: u64) -> Result<(), Errno> {
    mem.write(ptr, &v.to_le_bytes())
}
fn read_str(mem: &dyn Memory, ptr: u32, len: u32) -> Result<String, Errno> {
    String::from_utf8(read_vec(mem, ptr, len)?).map_err(|_| errno::INVAL)
}
/// The `(ptr, len)` pairs of an iovec array.
fn iovecs(mem: &dyn Memory, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
    (0..count)
        .map(|i| {
            let at = ptr
                .checked_add(i.checked_mul(size::IOVEC).ok_or(errno::FAULT)?)
                .ok_or(errno::FAULT)?;
            Ok((read_u32(mem, at)?, read_u32(mem, at + 4)?))
        })
        .collect()
}

/// Clocks, randomness and blocking waits, from the embedding.
pub trait Platform {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&self) -> u64;
    /// Nanoseconds on a monotonic clock.
    fn monotonic_ns(&self) -> u64;
    /// The clocks' resolution in nanoseconds.
    fn resolution_ns(&self) -> u64;
    /// Fills `buf` with cryptographically secure random bytes.
    fn random(&self, buf: &mut [u8]);
    /// Blocks the current thread for `ns` nanoseconds.
    fn sleep_ns(&self, ns: u64);
}

/// Why a guest's call does not return to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `proc_exit(status)`.
    Exit(i32),
    /// The task's deadline passed (checked on every system call).
    Deadline,
}

/// stdout or stderr, kept up to a cap.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// What was kept.
    pub data: Vec<u8>,
    /// Bytes kept at most.
    pub cap: usize,
    /// Whether anything was cut.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
enum Fd {
    Stdin,
    Stdout,
    Stderr,
    Dir {
        ino: Ino,
        preopen: Option<String>,
    },
    File {
        ino: Ino,
        pos: u64,
        append: bool,
        read: bool,
        write: bool,
    },
}

/// One guest's WASI state: argv, environment, stdio, descriptors and file system.
#[derive(Debug)]
pub struct WasiCtx {
    args: Vec<String>,
    envs: Vec<String>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    /// Captured stdout.
    pub stdout: Capture,
    /// Captured stderr.
    pub stderr: Capture,
    /// The file system (`/` is preopened as fd 3).
    pub fs: Fs,
    fds: BTreeMap<u32, Fd>,
    /// The monotonic time (ns) after which calls stop the guest with [`Stop::Deadline`].
    pub deadline_ns: Option<u64>,
    /// Set by `proc_exit`.
    pub exit_status: Option<i32>,
}

impl WasiCtx {
    /// A context with fds 0-2 and `/` preopened as fd 3.
    pub fn new(
        args: Vec<String>,
        envs: Vec<String>,
        stdin: Vec<u8>,
        fs: Fs,
        max_output: usize,
    ) -> Self {
        let mut fds = BTreeMap::new();
        fds.insert(0, Fd::Stdin);
        fds.insert(1, Fd::Stdout);
        fds.insert(2, Fd::Stderr);
        fds.insert(
            3,
            Fd::Dir {
                ino: ROOT,
                preopen: Some("/".into()),
            },
        );
        let capture = Capture {
            data: Vec::new(),
            cap: max_output,
            truncated: false,
        };
        WasiCtx {
            args,
            envs,
            stdin,
            stdin_pos: 0,
            stdout: capture.clone(),
            stderr: capture,
            fs,
            fds,
            deadline_ns: None,
            exit_status: None,
        }
    }

    /// Closes the preopened `/` (fd 3): a task with neither a rootfs nor artifacts gets no
    /// directory, as under `wasmtime run` without `--dir`.
    #[must_use]
    pub fn without_preopen(mut self) -> Self {
        self.fds.remove(&3);
        self
    }

    /// Calls the function `abi::FUNCTIONS[func]` with the guest's arguments (i32 arguments
    /// sign-extended, i64 as is); `unstable` selects the `wasi_unstable` layouts. Returns the
    /// errno for the guest, or why the guest stops.
    pub fn call(
        &mut self,
        platform: &dyn Platform,
        mem: &mut dyn Memory,
        func: usize,
        a: &[i64],
        unstable: bool,
    ) -> Result<i32, Stop> {
        if let Some(deadline) = self.deadline_ns
            && platform.monotonic_ns() >= deadline
        {
            return Err(Stop::Deadline);
        }
        let name = abi::FUNCTIONS.get(func).copied().unwrap_or("");
        let u = |i: usize| a.get(i).copied().unwrap_or(0) as u32;
        let w = |i: usize| a.get(i).copied().unwrap_or(0) as u64;
        let r = match name {
            "args_get" => flat(self.strings_get(mem, false, u(0), u(1))),
            "args_sizes_get" => flat(self.strings_sizes(mem, false, u(0), u(1))),
            "environ_get" => flat(self.strings_get(mem, true, u(0), u(1))),
            "environ_sizes_get" => flat(self.strings_sizes(mem, true, u(0), u(1))),
            "clock_res_get" => flat(clock_res(platform, mem, u(0), u(1))),
            "clock_time_get" => flat(clock_time(platform, mem, u(0), u(2))),
            "fd_advise" | "fd_datasync" | "fd_sync" => flat(self.fd(u(0)).map(|_| ())),
            // Neither changing rights nor preallocating is supported (as in wasmtime-wasi).
            "fd_fdstat_set_rights" | "fd_allocate" => flat(self.fd(u(0)).and(Err(errno::NOTSUP))),
            "fd_filestat_set_times" => flat(self.fd_set_times(u(0), w(1), w(2), u(3) as u16)),
            "fd_close" => flat(self.fds.remove(&u(0)).map(|_| ()).ok_or(errno::BADF)),
            "fd_fdstat_get" => flat(self.fdstat_get(mem, u(0), u(1))),
            "fd_fdstat_set_flags" => flat(self.fdstat_set_flags(u(0), u(1) as u16)),
            "fd_filestat_get" => flat(self.fd_filestat_get(mem, u(0), u(1), unstable)),
            "fd_filestat_set_size" => flat(self.fd_set_size(u(0), w(1))),
            "fd_pread" => flat(self.fd_read(mem, u(0), u(1), u(2), Some(w(3)), u(4))),
            "fd_pwrite" => flat(self.fd_write(mem, u(0), u(1), u(2), Some(w(3)), u(4))),
            "fd_prestat_get" => flat(self.prestat_get(mem, u(0), u(1))),
            "fd_prestat_dir_name" => flat(self.prestat_dir_name(mem, u(0), u(1), u(2))),
            "fd_read" => flat(self.fd_read(mem, u(0), u(1), u(2), None, u(3))),
            "fd_readdir" => flat(self.fd_readdir(mem, u(0), u(1), u(2), w(3), u(4))),
            "fd_renumber" => flat(self.fd_renumber(u(0), u(1))),
            "fd_seek" => {
                let whence = if unstable {
                    abi::whence::from_unstable(u(2) as u8)
                } else {
                    Some(u(2) as u8)
                };
                flat(whence.ok_or(errno::INVAL).and_then(|wh| {
                    self.fd_seek(mem, u(0), a.get(1).copied().unwrap_or(0), wh, u(3))
                }))
            }
            "fd_tell" => flat(self.fd_seek(mem, u(0), 0, abi::whence::CUR, u(1))),
            "fd_write" => flat(self.fd_write(mem, u(0), u(1), u(2), None, u(3))),
            "path_create_directory" => flat(self.path_create_directory(mem, u(0), u(1), u(2))),
            "path_filestat_get" => {
                flat(self.path_filestat_get(mem, u(0), follows(u(1)), u(2), u(3), u(4), unstable))
            }
            "path_filestat_set_times" => flat(self.path_set_times(
                mem,
                u(0),
                follows(u(1)),
                u(2),
                u(3),
                w(4),
                w(5),
                u(6) as u16,
            )),
            "path_link" => {
                flat(self.path_link(mem, u(0), follows(u(1)), u(2), u(3), u(4), u(5), u(6)))
            }
            "path_symlink" => flat(self.path_symlink(mem, u(0), u(1), u(2), u(3), u(4))),
            "path_readlink" => flat(self.path_readlink(mem, u(0), u(1), u(2), u(3), u(4), u(5))),
            "path_open" => flat(self.path_open(
                mem,
                u(0),
                follows(u(1)),
                u(2),
                u(3),
                u(4) as u16,
                w(5),
                u(7) as u16,
                u(8),
            )),
            "path_remove_directory" => flat(self.path_remove(mem, u(0), u(1), u(2), true)),
            "path_rename" => flat(self.path_rename(mem, u(0), u(1), u(2), u(3), u(4), u(5))),
            "path_unlink_file" => flat(self.path_remove(mem, u(0), u(1), u(2), false)),
            "poll_oneoff" => {
                return self
                    .poll_oneoff(platform, mem, u(0), u(1), u(2), u(3), unstable)
                    .map(i32::from);
            }
            "proc_exit" => {
                let status = u(0) as i32;
                self.exit_status = Some(status);
                return Err(Stop::Exit(status));
            }
            "sched_yield" => errno::SUCCESS,
            "proc_raise" => errno::NOTSUP,
            // No descriptor is a socket.
            "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown" => {
                flat(self.fd(u(0)).and(Err(errno::NOTSOCK)))
            }
            "random_get" => flat(random_get(platform, mem, u(0), u(1))),
            _ => errno::NOSYS,
        };
        self.fs.settle(|| platform.realtime_ns());
        Ok(i32::from(r))
    }

    fn fd(&self, fd: u32) -> Result<&Fd, Errno> {
        self.fds.get(&fd).ok_or(errno::BADF)
    }

    fn dir_fd(&self, fd: u32) -> Result<Ino, Errno> {
        match self.fd(fd)? {
            Fd::Dir { ino, .. } => Ok(*ino),
            Fd::File { .. } => Err(errno::NOTDIR),
            _ => Err(errno::BADF),
        }
    }

    fn strings(&self, env: bool) -> &[String] {
        if env { &self.envs } else { &self.args }
    }

    fn strings_sizes(
        &self,
        mem: &mut dyn Memory,
        env: bool,
        count_ptr: u32,
        size_ptr: u32,
    ) -> Result<(), Errno> {
        let list = self.strings(env);
        let total: usize = list.iter().map(|s| s.len() + 1).sum();
        write_u32(mem, count_ptr, list.len() as u32)?;
        write_u32(mem, size_ptr, total as u32)
    }

    fn strings_get(
        &self,
        mem: &mut dyn Memory,
        env: bool,
        ptrs: u32,
        buf: u32,
    ) -> Result<(), Errno> {
        let mut at = buf;
        for (i, s) in self.strings(env).iter().enumerate() {
            write_u32(mem, ptrs + 4 * i as u32, at)?;
            mem.write(at, s.as_bytes())?;
            mem.write(at + s.len() as u32, &[0])?;
            at += s.len() as u32 + 1;
        }
        Ok(())
    }

    fn fdstat_get(&self, mem: &mut dyn Memory, fd: u32, ptr: u32) -> Result<(), Errno> {
        // The rights wasmtime-wasi reports (it does not narrow them on request either).
        let stat = match self.fd(fd)? {
            Fd::Stdin => abi::encode_fdstat(filetype::UNKNOWN, 0, rights::FD_READ, rights::FD_READ),
            Fd::Stdout | Fd::Stderr => {
                abi::encode_fdstat(filetype::UNKNOWN, 0, rights::FD_WRITE, rights::FD_WRITE)
            }
            Fd::Dir {
                preopen: Some(_), ..
            } => abi::encode_fdstat(
                filetype::DIRECTORY,
                0,
                rights::PREOPEN_BASE,
                rights::PREOPEN_INHERITING,
            ),
            Fd::Dir { preopen: None, .. } => {
                abi::encode_fdstat(filetype::DIRECTORY, 0, rights::DIRECTORY, rights::DIRECTORY)
            }
            Fd::File {
                append,
                read,
                write,
                ..
            } => {
                let mut base = rights::ALL;
                if !read {
                    base &= !(rights::FD_READ | rights::FD_READDIR);
                }
                if !write {
                    base &= !rights::FD_WRITE;
                }
                let flags = if *append { abi::fdflags::APPEND } else { 0 };
                abi::encode_fdstat(filetype::REGULAR_FILE, flags, base, base)
            }
        };
        mem.write(ptr, &stat)
    }

    fn fdstat_set_flags(&mut self, fd: u32, flags: u16) -> Result<(), Errno> {
        let entry = self.fds.get_mut(&fd).ok_or(errno::BADF)?;
        if flags & abi::fdflags::ANY_SYNC != 0 {
            return Err(errno::INVAL);
        }
        match entry {
            Fd::File { append, .. } => {
                *append = flags & abi::fdflags::APPEND != 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn write_filestat(
        &self,
        mem: &mut dyn Memory,
        ptr: u32,
        ino: Option<Ino>,
        unstable: bool,
    ) -> Result<(), Errno> {
        let (number, kind, nlink, len, times) = match ino {
            Some(ino) => (
                ino as u64 + 1,
                self.fs.filetype(ino),
                self.fs.nlink(ino),
                self.fs.size(ino),
                self.fs.times(ino),
            ),
            None => (0, filetype::UNKNOWN, 1, 0, [0; 3]),
        };
        let stat = abi::encode_filestat(number, kind, nlink, len, times);
        if unstable {
            // wasi_unstable: nlink is a u32 at 20, then size, atim, mtim, ctim (56 bytes).
            let mut old = [0u8; 56];
            old[..17].copy_from_slice(&stat[..17]);
            old[20..24].copy_from_slice(&(nlink as u32).to_le_bytes());
            old[24..32].copy_from_slice(&len.to_le_bytes());
            old[32..56].copy_from_slice(&stat[40..64]);
            mem.write(ptr, &old)
        } else {
            mem.write(ptr, &stat)
        }
    }

    fn fd_filestat_get(
        &self,
        mem: &mut dyn Memory,
        fd: u32,
        ptr: u32,
        unstable: bool,
    ) -> Result<(), Errno> {
        let ino = match self.fd(fd)? {
            Fd::Dir { ino, .. } | Fd::File { ino, .. } => Some(*ino),
            _ => None,
        };
        self.write_filestat(mem, ptr, ino, unstable)
    }

    fn file_data(&mut self, fd: u32) -> Result<&mut Vec<u8>, Errno> {
        let ino = match self.fd(fd)? {
            Fd::File { ino, .. } => *ino,
            Fd::Dir { .. } => return Err(errno::ISDIR),
            _ => return Err(errno::INVAL),
        };
        match self.fs.node_mut(ino) {
            Node::File(data) => Ok(data),
            Node::Dir { .. } => Err(errno::ISDIR),
            Node::Symlink(_) => Err(errno::INVAL),
        }
    }

    fn fd_set_size(&mut self, fd: u32, len: u64) -> Result<(), Errno> {
        let len = usize::try_from(len).map_err(|_| errno::FBIG)?;
        self.file_data(fd)?.resize(len, 0);
        if let Some(Fd::File { ino, .. }) = self.fds.get(&fd) {
            let ino = *ino;
            self.fs.touch(ino);
        }
        Ok(())
    }

    /// The times `fst_flags` asks to set: `EINVAL` for a time and its `_NOW` together.
    fn requested_times(
        &self,
        atim: u64,
        mtim: u64,
        fst_flags: u16,
    ) -> Result<(Option<SetTime>, Option<SetTime>), Errno> {
        use abi::fstflags::{ATIM, ATIM_NOW, MTIM, MTIM_NOW};
        if fst_flags & (ATIM | ATIM_NOW) == ATIM | ATIM_NOW
            || fst_flags & (MTIM | MTIM_NOW) == MTIM | MTIM_NOW
        {
            return Err(errno::INVAL);
        }
        let pick = |set: u16, now: u16, value: u64| {
            if fst_flags & set != 0 {
                Some(SetTime::At(value))
            } else if fst_flags & now != 0 {
                Some(SetTime::Now)
            } else {
                None
            }
        };
        Ok((pick(ATIM, ATIM_NOW, atim), pick(MTIM, MTIM_NOW, mtim)))
    }

    fn fd_set_times(&mut self, fd: u32, atim: u64, mtim: u64, fst_flags: u16) -> Result<(), Errno> {
        let ino = match self.fd(fd)? {
            Fd::Dir { ino, .. } | Fd::File { ino, .. } => *ino,
            _ => return Err(errno::BADF),
        };
        let (atim, mtim) = self.requested_times(atim, mtim, fst_flags)?;
        self.fs.set_times(ino, atim, mtim);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_set_times(
        &mut self,
        mem: &dyn Memory,
        fd: u32,
        follow: bool,
        path: u32,
        len: u32,
        atim: u64,
        mtim: u64,
        fst_flags: u16,
    ) -> Result<(), Errno> {
        let ino = self.path_ino(mem, fd, follow, path, len)?;
        let (atim, mtim) = self.requested_times(atim, mtim, fst_flags)?;
        self.fs.set_times(ino, atim, mtim);
        Ok(())
    }

    fn prestat_get(&self, mem: &mut dyn Memory, fd: u32, ptr: u32) -> Result<(), Errno> {
        match self.fd(fd)? {
            Fd::Dir {
                preopen: Some(name),
                ..
            } => {
                let mut b = [0u8; 8];
                b[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
                mem.write(ptr, &b)
            }
            _ => Err(errno::BADF),
        }
    }

    fn prestat_dir_name(
        &self,
        mem: &mut dyn Memory,
        fd: u32,
        ptr: u32,
        len: u32,
    ) -> Result<(), Errno> {
        match self.fd(fd)? {
            Fd::Dir {
                preopen: Some(name),
                ..
            } => {
                if (len as usize) < name.len() {
                    return Err(errno::NAMETOOLONG);
                }
                mem.write(ptr, name.as_bytes())
            }
            _ => Err(errno::BADF),
        }
    }

    fn fd_read(
        &mut self,
        mem: &mut dyn Memory,
        fd: u32,
        iovs: u32,
        count: u32,
        at: Option<u64>,
        nread_ptr: u32,
    ) -> Result<(), Errno> {
        let iovs = iovecs(mem, iovs, count)?;
        let mut total = 0usize;
        match self.fds.get_mut(&fd).ok_or(errno::BADF)? {
            Fd::Stdin => {
                if at.is_some() {
                    return Err(errno::SPIPE);
                }
                for (ptr, len) in iovs {
                    let rest = &self.stdin[self.stdin_pos..];
                    let n = rest.len().min(len as usize);
                    mem.write(ptr, &rest[..n])?;
                    self.stdin_pos += n;
                    total += n;
                    if n < len as usize {
                        break;
                    }
                }
            }
            Fd::File { ino, pos, read, .. } => {
                if !*read {
                    return Err(errno::BADF);
                }
                let Node::File(data) = self.fs.node(*ino) else {
                    return Err(errno::BADF);
                };
                let mut offset = at.unwrap_or(*pos) as usize;
                for (ptr, len) in iovs {
                    let rest = data.get(offset..).unwrap_or(&[]);
                    let n = rest.len().min(len as usize);
                    mem.write(ptr, &rest[..n])?;
                    offset += n;
                    total += n;
                    if n < len as usize {
                        break;
                    }
                }
                if at.is_none() {
                    *pos = offset as u64;
                }
            }
            Fd::Dir { .. } | Fd::Stdout | Fd::Stderr => return Err(errno::BADF),
        }
        write_u32(mem, nread_ptr, total as u32)
    }

    fn fd_write(
        &mut self,
        mem: &mut dyn Memory,
        fd: u32,
        iovs: u32,
        count: u32,
        at: Option<u64>,
        nwritten_ptr: u32,
    ) -> Result<(), Errno> {
        let iovs = iovecs(mem, iovs, count)?;
        let mut total = 0usize;
        let to_stdout = matches!(self.fds.get(&fd), Some(Fd::Stdout));
        match self.fds.get_mut(&fd).ok_or(errno::BADF)? {
            Fd::Stdout | Fd::Stderr => {
                if at.is_some() {
                    return Err(errno::SPIPE);
                }
                let capture = if to_stdout {
                    &mut self.stdout
                } else {
                    &mut self.stderr
                };
                for (ptr, len) in iovs {
                    let room = capture.cap.saturating_sub(capture.data.len());
                    let keep = room.min(len as usize);
                    if keep > 0 {
                        let start = capture.data.len();
                        capture.data.resize(start + keep, 0);
                        mem.read(ptr, &mut capture.data[start..])?;
                    }
                    if keep < len as usize {
                        capture.truncated = true;
                    }
                    total += len as usize;
                }
            }
            Fd::File {
                ino,
                pos,
                append,
                write,
                ..
            } => {
                if !*write {
                    return Err(errno::BADF);
                }
                let ino = *ino;
                let Node::File(data) = self.fs.node_mut(ino) else {
                    return Err(errno::ISDIR);
                };
                let mut offset = match at {
                    Some(at) => at as usize,
                    None if *append => data.len(),
                    None => *pos as usize,
                };
                for (ptr, len) in iovs {
                    let chunk = read_vec(mem, ptr, len)?;
                    let end = offset + chunk.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[offset..end].copy_from_slice(&chunk);
                    offset = end;
                    total += chunk.len();
                }
                if at.is_none() {
                    *pos = offset as u64;
                }
                self.fs.touch(ino);
            }
            Fd::Dir { .. } | Fd::Stdin => return Err(errno::BADF),
        }
        write_u32(mem, nwritten_ptr, total as u32)
    }

    fn fd_seek(
        &mut self,
        mem: &mut dyn Memory,
        fd: u32,
        offset: i64,
        whence: u8,
        ptr: u32,
    ) -> Result<(), Errno> {
        let (ino, pos) = match self.fds.get_mut(&fd).ok_or(errno::BADF)? {
            Fd::File { ino, pos, .. } => (*ino, pos),
            Fd::Dir { .. } => return Err(errno::BADF),
            _ => return Err(errno::SPIPE),
        };
        let base = match whence {
            abi::whence::SET => 0,
            abi::whence::CUR => *pos as i64,
            abi::whence::END => self.fs.size(ino) as i64,
            _ => return Err(errno::INVAL),
        };
        let new = base.checked_add(offset).ok_or(errno::OVERFLOW)?;
        if new < 0 {
            return Err(errno::INVAL);
        }
        *pos = new as u64;
        write_u64(mem, ptr, new as u64)
    }

    fn fd_readdir(
        &mut self,
        mem: &mut dyn Memory,
        fd: u32,
        buf: u32,
        buf_len: u32,
        cookie: u64,
        used_ptr: u32,
    ) -> Result<(), Errno> {
        let ino = match self.fd(fd)? {
            Fd::Dir { ino, .. } => *ino,
            _ => return Err(errno::BADF),
        };
        let mut list: Vec<(String, Ino)> =
            vec![(".".into(), ino), ("..".into(), self.fs.parent(ino))];
        list.extend(
            self.fs
                .entries(ino)?
                .iter()
                .map(|(name, &child)| (name.clone(), child)),
        );
        let mut out = Vec::new();
        for (index, (name, child)) in list.iter().enumerate().skip(cookie as usize) {
            let kind = self.fs.filetype(*child);
            out.extend_from_slice(&abi::encode_dirent(
                index as u64 + 1,
                *child as u64 + 1,
                name.len() as u32,
                kind,
            ));
            out.extend_from_slice(name.as_bytes());
            if out.len() >= buf_len as usize {
                break;
            }
        }
        out.truncate(buf_len as usize);
        mem.write(buf, &out)?;
        write_u32(mem, used_ptr, out.len() as u32)
    }

    fn fd_renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        self.fd(to)?;
        let entry = self.fds.remove(&from).ok_or(errno::BADF)?;
        self.fds.insert(to, entry);
        Ok(())
    }

    /// What `path` (relative to the directory `fd`) names; a link in the last component is
    /// followed if `follow`.
    fn path_ino(
        &self,
        mem: &dyn Memory,
        fd: u32,
        follow: bool,
        path: u32,
        len: u32,
    ) -> Result<Ino, Errno> {
        let dir = self.dir_fd(fd)?;
        let path = read_str(mem, path, len)?;
        self.fs.lookup(dir, &path, follow)
    }

    #[allow(clippy::too_many_arguments)]
    fn path_filestat_get(
        &self,
        mem: &mut dyn Memory,
        fd: u32,
        follow: bool,
        path: u32,
        len: u32,
        ptr: u32,
        unstable: bool,
    ) -> Result<(), Errno> {
        let ino = self.path_ino(mem, fd, follow, path, len)?;
        self.write_filestat(mem, ptr, Some(ino), unstable)
    }

    #[allow(clippy::too_many_arguments)]
    fn path_link(
        &mut self,
        mem: &dyn Memory,
        old_fd: u32,
        follow: bool,
        old: u32,
        old_len: u32,
        new_fd: u32,
        new: u32,
        new_len: u32,
    ) -> Result<(), Errno> {
        let ino = self.path_ino(mem, old_fd, follow, old, old_len)?;
        let base = self.dir_fd(new_fd)?;
        let new = read_str(mem, new, new_len)?;
        let (dir, name) = self.fs.resolve_parent(base, &new)?;
        self.fs.link(ino, dir, name)
    }

    fn path_symlink(
        &mut self,
        mem: &dyn Memory,
        target: u32,
        target_len: u32,
        fd: u32,
        path: u32,
        len: u32,
    ) -> Result<(), Errno> {
        let target = read_str(mem, target, target_len)?;
        let base = self.dir_fd(fd)?;
        let path = read_str(mem, path, len)?;
        let (dir, name) = self.fs.resolve_parent(base, &path)?;
        self.fs.create_symlink(dir, name, &target).map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_readlink(
        &self,
        mem: &mut dyn Memory,
        fd: u32,
        path: u32,
        len: u32,
        buf: u32,
        buf_len: u32,
        used_ptr: u32,
    ) -> Result<(), Errno> {
        let ino = self.path_ino(mem, fd, false, path, len)?;
        let target = self.fs.readlink(ino)?.as_bytes();
        let used = target.len().min(buf_len as usize);
        mem.write(buf, &target[..used])?;
        write_u32(mem, used_ptr, used as u32)
    }

    fn path_create_directory(
        &mut self,
        mem: &dyn Memory,
        fd: u32,
        path: u32,
        len: u32,
    ) -> Result<(), Errno> {
        let dir = self.dir_fd(fd)?;
        let path = read_str(mem, path, len)?;
        let (parent, name) = self.fs.resolve_parent(dir, &path)?;
        self.fs.create_dir(parent, name).map(|_| ())
    }

    fn path_remove(
        &mut self,
        mem: &dyn Memory,
        fd: u32,
        path: u32,
        len: u32,
        dir: bool,
    ) -> Result<(), Errno> {
        let base = self.dir_fd(fd)?;
        let path = read_str(mem, path, len)?;
        let (parent, name) = self.fs.resolve_parent(base, &path)?;
        if dir {
            self.fs.remove_dir(parent, name)
        } else {
            // `dir/` names a directory: `EISDIR` as for `dir`; `file/` is `ENOTDIR`.
            if path.ends_with('/') {
                let ino = *self.fs.entries(parent)?.get(name).ok_or(errno::NOENT)?;
                return Err(if self.fs.is_dir(ino) {
                    errno::ISDIR
                } else {
                    errno::NOTDIR
                });
            }
            self.fs.unlink_file(parent, name)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn path_rename(
        &mut self,
        mem: &dyn Memory,
        fd: u32,
        old: u32,
        old_len: u32,
        new_fd: u32,
        new: u32,
        new_len: u32,
    ) -> Result<(), Errno> {
        let from_base = self.dir_fd(fd)?;
        let to_base = self.dir_fd(new_fd)?;
        let old = read_str(mem, old, old_len)?;
        let new = read_str(mem, new, new_len)?;
        let (from_dir, from) = self.fs.resolve_parent(from_base, &old)?;
        let (to_dir, to) = self.fs.resolve_parent(to_base, &new)?;
        self.fs.rename(from_dir, from, to_dir, to)
    }

    #[allow(clippy::too_many_arguments)]
    fn path_open(
        &mut self,
        mem: &mut dyn Memory,
        fd: u32,
        follow: bool,
        path: u32,
        len: u32,
        oflags: u16,
        rights_base: u64,
        fdflags: u16,
        fd_ptr: u32,
    ) -> Result<(), Errno> {
        let base = self.dir_fd(fd)?;
        let path = read_str(mem, path, len)?;
        let ino = match self.fs.lookup(base, &path, follow) {
            // `O_NOFOLLOW` on a link.
            Ok(ino) if self.fs.is_symlink(ino) => return Err(errno::LOOP),
            Ok(ino) => {
                if oflags & oflags::CREAT != 0 && oflags & oflags::EXCL != 0 {
                    return Err(errno::EXIST);
                }
                ino
            }
            Err(errno::NOENT) if oflags & oflags::CREAT != 0 => {
                if path.ends_with('/') {
                    return Err(errno::ISDIR);
                }
                let (parent, name) = self.fs.resolve_parent(base, &path)?;
                self.fs.create_file(parent, name)?
            }
            Err(e) => return Err(e),
        };
        let write = rights_base & rights::FD_WRITE != 0;
        let entry = if self.fs.is_dir(ino) {
            // A directory cannot be opened for writing or truncated.
            if oflags & oflags::TRUNC != 0 || write {
                return Err(errno::ISDIR);
            }
            Fd::Dir { ino, preopen: None }
        } else {
            if oflags & oflags::DIRECTORY != 0 {
                return Err(errno::NOTDIR);
            }
            // Synchronous I/O is not supported (as in wasmtime-wasi).
            if fdflags & abi::fdflags::ANY_SYNC != 0 {
                return Err(errno::NOTSUP);
            }
            if oflags & oflags::TRUNC != 0
                && let Node::File(data) = self.fs.node_mut(ino)
            {
                data.clear();
                self.fs.touch(ino);
            }
            Fd::File {
                ino,
                pos: 0,
                append: fdflags & abi::fdflags::APPEND != 0,
                read: rights_base & rights::FD_READ != 0,
                write,
            }
        };
        let new_fd = (3..)
            .find(|n| !self.fds.contains_key(n))
            .ok_or(errno::BADF)?;
        self.fds.insert(new_fd, entry);
        write_u32(mem, fd_ptr, new_fd)
    }

    #[allow(clippy::too_many_arguments)]
    fn poll_oneoff(
        &mut self,
        platform: &dyn Platform,
        mem: &mut dyn Memory,
        input: u32,
        output: u32,
        count: u32,
        nevents_ptr: u32,
        unstable: bool,
    ) -> Result<Errno, Stop> {
        match self.poll(platform, mem, input, output, count, nevents_ptr, unstable) {
            Ok(r) => r.map(|()| errno::SUCCESS),
            Err(e) => Ok(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn poll(
        &mut self,
        platform: &dyn Platform,
        mem: &mut dyn Memory,
        input: u32,
        output: u32,
        count: u32,
        nevents_ptr: u32,
        unstable: bool,
    ) -> Result<Result<(), Stop>, Errno> {
        if count == 0 {
            return Err(errno::INVAL);
        }
        let sub_size = if unstable { 56 } else { size::SUBSCRIPTION };
        let now = platform.monotonic_ns();
        let mut ready = Vec::new();
        let mut clocks = Vec::new();
        for i in 0..count {
            let sub = read_vec(mem, input + i * sub_size, sub_size)?;
            let userdata = u64::from_le_bytes(sub[0..8].try_into().map_err(|_| errno::FAULT)?);
            let tag = sub[8];
            let u64_at = |at: usize| {
                sub.get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0)
            };
            match tag {
                abi::eventtype::CLOCK => {
                    let shift = if unstable { 8 } else { 0 };
                    let id = u32::from_le_bytes(
                        sub[16 + shift..20 + shift]
                            .try_into()
                            .map_err(|_| errno::FAULT)?,
                    );
                    let timeout = u64_at(24 + shift);
                    let flags = u16::from_le_bytes(
                        sub[40 + shift..42 + shift]
                            .try_into()
                            .map_err(|_| errno::FAULT)?,
                    );
                    let wait = if flags & abi::SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                        let clock_now = match id {
                            abi::clockid::REALTIME => platform.realtime_ns(),
                            abi::clockid::MONOTONIC
                            | abi::clockid::PROCESS_CPUTIME
                            | abi::clockid::THREAD_CPUTIME => now,
                            _ => return Err(errno::INVAL),
                        };
                        timeout.saturating_sub(clock_now)
                    } else {
                        timeout
                    };
                    clocks.push((userdata, wait));
                }
                abi::eventtype::FD_READ | abi::eventtype::FD_WRITE => {
                    let fd = u32::from_le_bytes(sub[16..20].try_into().map_err(|_| errno::FAULT)?);
                    let (error, nbytes) = match self.fds.get(&fd) {
                        // A bad descriptor fails the whole call (as in wasmtime-wasi).
                        None => return Err(errno::BADF),
                        Some(Fd::Stdin) => (0, (self.stdin.len() - self.stdin_pos) as u64),
                        Some(Fd::File { ino, pos, .. }) => {
                            (0, self.fs.size(*ino).saturating_sub(*pos))
                        }
                        Some(_) => (0, 0),
                    };
                    ready.push(abi::encode_event(userdata, error, tag, nbytes));
                }
                _ => return Err(errno::INVAL),
            }
        }
        if ready.is_empty() {
            let Some(min) = clocks.iter().map(|&(_, wait)| wait).min() else {
                return Err(errno::INVAL);
            };
            let mut stop = Ok(());
            let mut sleep = min;
            if let Some(deadline) = self.deadline_ns
                && now.saturating_add(min) >= deadline
            {
                sleep = deadline.saturating_sub(now);
                stop = Err(Stop::Deadline);
            }
            if sleep > 0 {
                platform.sleep_ns(sleep);
            }
            if stop.is_err() {
                return Ok(stop);
            }
            for (userdata, wait) in clocks {
                if wait <= min {
                    ready.push(abi::encode_event(userdata, 0, abi::eventtype::CLOCK, 0));
                }
            }
        }
        for (i, event) in ready.iter().enumerate() {
            mem.write(output + i as u32 * size::EVENT, event)?;
        }
        write_u32(mem, nevents_ptr, ready.len() as u32)?;
        Ok(Ok(()))
    }
}

/// Whether `lookupflags` asks to follow a link in the last component.
fn follows(lookupflags: u32) -> bool {
    lookupflags & abi::LOOKUP_SYMLINK_FOLLOW != 0
}

fn flat(r: Result<(), Errno>) -> Errno {
    match r {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    }
}

fn clock_res(
    platform: &dyn Platform,
    mem: &mut dyn Memory,
    id: u32,
    ptr: u32,
) -> Result<(), Errno> {
    if id > abi::clockid::THREAD_CPUTIME {
        return Err(errno::INVAL);
    }
    write_u64(mem, ptr, platform.resolution_ns())
}

fn clock_time(
    platform: &dyn Platform,
    mem: &mut dyn Memory,
    id: u32,
    ptr: u32,
) -> Result<(), Errno> {
    let now = match id {
        abi::clockid::REALTIME => platform.realtime_ns(),
        abi::clockid::MONOTONIC | abi::clockid::PROCESS_CPUTIME | abi::clockid::THREAD_CPUTIME => {
            platform.monotonic_ns()
        }
        _ => return Err(errno::INVAL),
    };
    write_u64(mem, ptr, now)
}

fn random_get(
    platform: &dyn Platform,
    mem: &mut dyn Memory,
    ptr: u32,
    len: u32,
) -> Result<(), Errno> {
    let mut buf = vec![0u8; len as usize];
    platform.random(&mut buf);
    mem.write(ptr, &buf)
}

/// Index of a function in [`abi::FUNCTIONS`].
pub fn function_index(name: &str) -> Option<usize> {
    abi::FUNCTIONS.iter().position(|f| *f == name)
}
