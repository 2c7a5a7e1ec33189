//! `wasiprobe`: calls every WASI preview 1 function, edge cases included, and prints one line
//! per call, `<label>: ok <value>` or `<label>: err <ERRNO>`, in a form that does not depend on
//! the host (no inode numbers, descriptor numbers or current times). The differential tests
//! of `wasimoff-wasi` run it under wasmtime-wasi and under wasimoff's own host and compare the
//! lines, the exit status and the directory tree left behind.
//!
//! It expects a preopened directory as fd 3 (an empty rootfs is enough) and ends with
//! `proc_exit(7)`.

#![allow(unsafe_code)] // every call here is a raw WASI import

use std::fmt::Debug;

use wasi::{Errno, Fd};

/// The preopened directory.
const ROOT: Fd = 3;

/// Every right of preview 1.
const ALL_RIGHTS: u64 = (1 << 29) - 1;

/// The rights that make sense on a directory (no read, write, seek or size rights: asking for
/// write rights on a directory is `ISDIR`).
const DIR_RIGHTS: u64 = wasi::RIGHTS_FD_FDSTAT_SET_FLAGS
    | wasi::RIGHTS_FD_SYNC
    | wasi::RIGHTS_FD_ADVISE
    | wasi::RIGHTS_PATH_CREATE_DIRECTORY
    | wasi::RIGHTS_PATH_CREATE_FILE
    | wasi::RIGHTS_PATH_LINK_SOURCE
    | wasi::RIGHTS_PATH_LINK_TARGET
    | wasi::RIGHTS_PATH_OPEN
    | wasi::RIGHTS_FD_READDIR
    | wasi::RIGHTS_PATH_READLINK
    | wasi::RIGHTS_PATH_RENAME_SOURCE
    | wasi::RIGHTS_PATH_RENAME_TARGET
    | wasi::RIGHTS_PATH_FILESTAT_GET
    | wasi::RIGHTS_PATH_FILESTAT_SET_TIMES
    | wasi::RIGHTS_FD_FILESTAT_GET
    | wasi::RIGHTS_FD_FILESTAT_SET_TIMES
    | wasi::RIGHTS_PATH_SYMLINK
    | wasi::RIGHTS_PATH_REMOVE_DIRECTORY
    | wasi::RIGHTS_PATH_UNLINK_FILE;

fn show<T: Debug>(label: &str, result: Result<T, Errno>) -> Option<T> {
    match result {
        Ok(value) => {
            println!("{label}: ok {value:?}");
            Some(value)
        }
        Err(e) => {
            println!("{label}: err {}", e.name());
            None
        }
    }
}

/// Prints only whether the call succeeded (for values that differ between hosts: fds, times).
fn status<T>(label: &str, result: Result<T, Errno>) -> Option<T> {
    match result {
        Ok(value) => {
            println!("{label}: ok");
            Some(value)
        }
        Err(e) => {
            println!("{label}: err {}", e.name());
            None
        }
    }
}

fn open(
    dir: Fd,
    dirflags: u32,
    path: &str,
    oflags: u16,
    rights: u64,
    fdflags: u16,
) -> Result<Fd, Errno> {
    unsafe { wasi::path_open(dir, dirflags, path, oflags, rights, ALL_RIGHTS, fdflags) }
}

fn write(fd: Fd, data: &[u8]) -> Result<usize, Errno> {
    unsafe {
        wasi::fd_write(
            fd,
            &[wasi::Ciovec {
                buf: data.as_ptr(),
                buf_len: data.len(),
            }],
        )
    }
}

fn read(fd: Fd, len: usize) -> Result<String, Errno> {
    let mut buf = vec![0u8; len];
    let n = unsafe {
        wasi::fd_read(
            fd,
            &[wasi::Iovec {
                buf: buf.as_mut_ptr(),
                buf_len: buf.len(),
            }],
        )
    }?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn pread(fd: Fd, len: usize, offset: u64) -> Result<String, Errno> {
    let mut buf = vec![0u8; len];
    let n = unsafe {
        wasi::fd_pread(
            fd,
            &[wasi::Iovec {
                buf: buf.as_mut_ptr(),
                buf_len: buf.len(),
            }],
            offset,
        )
    }?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The host-independent part of a filestat: type, link count, size.
fn stat_of(stat: wasi::Filestat) -> (u8, u64, u64) {
    (stat.filetype.raw(), stat.nlink, stat.size)
}

fn fdstat(fd: Fd) -> Result<(u8, u16, String, String), Errno> {
    let stat = unsafe { wasi::fd_fdstat_get(fd) }?;
    Ok((
        stat.fs_filetype.raw(),
        stat.fs_flags,
        format!("{:#x}", stat.fs_rights_base),
        format!("{:#x}", stat.fs_rights_inheriting),
    ))
}

/// The names (and types) a directory lists, sorted, `.` and `..` included, and how many entries
/// a listing resumed at the first entry's cookie returns.
fn readdir(fd: Fd) -> Result<(Vec<(String, u8)>, usize), Errno> {
    let entries = |cookie: u64| -> Result<Vec<(String, u8, u64)>, Errno> {
        let mut buf = vec![0u8; 4096];
        let used = unsafe { wasi::fd_readdir(fd, buf.as_mut_ptr(), buf.len(), cookie) }?;
        let mut out = Vec::new();
        let mut at = 0;
        while at + 24 <= used {
            let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default());
            let len =
                u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap_or_default()) as usize;
            let kind = buf[at + 20];
            let name_end = (at + 24 + len).min(used);
            let name = String::from_utf8_lossy(&buf[at + 24..name_end]).into_owned();
            out.push((name, kind, next));
            at += 24 + len;
        }
        Ok(out)
    };
    let all = entries(0)?;
    let resumed = match all.first() {
        Some((_, _, next)) => entries(*next)?.len(),
        None => 0,
    };
    let mut names: Vec<(String, u8)> = all.into_iter().map(|(n, k, _)| (n, k)).collect();
    names.sort();
    Ok((names, resumed))
}

fn readlink(dir: Fd, path: &str) -> Result<String, Errno> {
    let mut buf = vec![0u8; 256];
    let n = unsafe { wasi::path_readlink(dir, path, buf.as_mut_ptr(), buf.len()) }?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn main() {
    args_and_environment();
    clocks_random_and_scheduling();
    preopens();
    files();
    times();
    rights();
    directories();
    links();
    descriptors();
    polling();
    sockets();
    println!("done");
    unsafe { wasi::proc_exit(7) }
}

fn args_and_environment() {
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");
    let mut envs: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    envs.sort();
    println!("envs: {envs:?}");
    show("args_sizes_get", unsafe { wasi::args_sizes_get() });
    show("environ_sizes_get", unsafe { wasi::environ_sizes_get() });
}

fn clocks_random_and_scheduling() {
    for (name, clock) in [
        ("realtime", wasi::CLOCKID_REALTIME),
        ("monotonic", wasi::CLOCKID_MONOTONIC),
    ] {
        status(&format!("clock_res_get {name}"), unsafe {
            wasi::clock_res_get(clock)
        });
        status(&format!("clock_time_get {name}"), unsafe {
            wasi::clock_time_get(clock, 1)
        });
    }
    let a = unsafe { wasi::clock_time_get(wasi::CLOCKID_MONOTONIC, 1) }.unwrap_or(0);
    let b = unsafe { wasi::clock_time_get(wasi::CLOCKID_MONOTONIC, 1) }.unwrap_or(0);
    println!("monotonic does not go back: {}", b >= a);
    let mut buf = [0u8; 32];
    status("random_get", unsafe {
        wasi::random_get(buf.as_mut_ptr(), buf.len())
    });
    println!("random bytes vary: {}", buf.iter().any(|&b| b != buf[0]));
    show("sched_yield", unsafe { wasi::sched_yield() });
    show("proc_raise", unsafe { wasi::proc_raise(wasi::SIGNAL_TERM) });
}

fn preopens() {
    if let Some(prestat) = show(
        "fd_prestat_get 3",
        unsafe { wasi::fd_prestat_get(ROOT) }.map(|p| (p.tag, unsafe { p.u.dir.pr_name_len })),
    ) {
        let mut name = vec![0u8; prestat.1];
        status("fd_prestat_dir_name 3", unsafe {
            wasi::fd_prestat_dir_name(ROOT, name.as_mut_ptr(), name.len())
        });
        println!("preopen name: {:?}", String::from_utf8_lossy(&name));
    }
    show(
        "fd_prestat_get 0",
        unsafe { wasi::fd_prestat_get(0) }.map(|p| p.tag),
    );
    show(
        "fd_prestat_get 99",
        unsafe { wasi::fd_prestat_get(99) }.map(|p| p.tag),
    );
    show("fd_fdstat_get 3", fdstat(ROOT));
    show(
        "fd_fdstat_get 1",
        fdstat(1).map(|(kind, flags, ..)| (kind, flags)),
    );
    show(
        "fd_filestat_get 3",
        unsafe { wasi::fd_filestat_get(ROOT) }.map(|s| s.filetype.raw()),
    );
}

fn files() {
    let Some(fd) = status(
        "path_open f.txt creat",
        open(
            ROOT,
            0,
            "f.txt",
            wasi::OFLAGS_CREAT | wasi::OFLAGS_TRUNC,
            ALL_RIGHTS,
            0,
        ),
    ) else {
        return;
    };
    show("fd_fdstat_get f.txt", fdstat(fd));
    show("fd_write", write(fd, b"hello"));
    show("fd_tell", unsafe { wasi::fd_tell(fd) });
    show("fd_seek set 0", unsafe {
        wasi::fd_seek(fd, 0, wasi::WHENCE_SET)
    });
    show("fd_read", read(fd, 100));
    show("fd_read at end", read(fd, 100));
    show("fd_pread 1", pread(fd, 100, 1));
    show("fd_pread past end", pread(fd, 100, 1000));
    let j = b"J";
    show("fd_pwrite 0", unsafe {
        wasi::fd_pwrite(
            fd,
            &[wasi::Ciovec {
                buf: j.as_ptr(),
                buf_len: 1,
            }],
            0,
        )
    });
    show("fd_tell after pwrite", unsafe { wasi::fd_tell(fd) });
    show("fd_seek cur -2", unsafe {
        wasi::fd_seek(fd, -2, wasi::WHENCE_CUR)
    });
    show("fd_seek end 0", unsafe {
        wasi::fd_seek(fd, 0, wasi::WHENCE_END)
    });
    show("fd_seek negative", unsafe {
        wasi::fd_seek(fd, -100, wasi::WHENCE_SET)
    });
    show("fd_seek past end", unsafe {
        wasi::fd_seek(fd, 10, wasi::WHENCE_SET)
    });
    show("fd_write past end", write(fd, b"x"));
    show(
        "fd_filestat_get f.txt",
        unsafe { wasi::fd_filestat_get(fd) }.map(stat_of),
    );
    show("contents", pread(fd, 100, 0).map(|s| s.replace('\0', "0")));
    show("fd_filestat_set_size 3", unsafe {
        wasi::fd_filestat_set_size(fd, 3)
    });
    show("fd_filestat_set_size 8", unsafe {
        wasi::fd_filestat_set_size(fd, 8)
    });
    show(
        "contents after set_size",
        pread(fd, 100, 0).map(|s| s.replace('\0', "0")),
    );
    show("fd_allocate", unsafe { wasi::fd_allocate(fd, 0, 4) });
    show("fd_advise", unsafe {
        wasi::fd_advise(fd, 0, 4, wasi::ADVICE_SEQUENTIAL)
    });
    show("fd_datasync", unsafe { wasi::fd_datasync(fd) });
    show("fd_sync", unsafe { wasi::fd_sync(fd) });
    show("fd_fdstat_set_flags append", unsafe {
        wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_APPEND)
    });
    show(
        "fd_fdstat_get after append",
        fdstat(fd).map(|(_, flags, ..)| flags),
    );
    unsafe { wasi::fd_seek(fd, 0, wasi::WHENCE_SET) }.ok();
    show("fd_write appends", write(fd, b"END"));
    show(
        "contents after append",
        pread(fd, 100, 0).map(|s| s.replace('\0', "0")),
    );
    show("fd_fdstat_set_flags sync", unsafe {
        wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_SYNC)
    });
    show("fd_fdstat_set_flags nonblock", unsafe {
        wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_NONBLOCK)
    });
    show("fd_close f.txt", unsafe { wasi::fd_close(fd) });
    show("fd_close again", unsafe { wasi::fd_close(fd) });
    show("fd_write closed", write(fd, b"x"));
    show(
        "path_open excl existing",
        open(
            ROOT,
            0,
            "f.txt",
            wasi::OFLAGS_CREAT | wasi::OFLAGS_EXCL,
            ALL_RIGHTS,
            0,
        ),
    );
    show(
        "path_open missing",
        open(ROOT, 0, "missing.txt", 0, ALL_RIGHTS, 0),
    );
    show(
        "path_open file as directory",
        open(ROOT, 0, "f.txt", wasi::OFLAGS_DIRECTORY, ALL_RIGHTS, 0),
    );
    show(
        "path_open trailing slash on file",
        open(ROOT, 0, "f.txt/", 0, ALL_RIGHTS, 0),
    );
    show(
        "path_open sync flag",
        open(ROOT, 0, "f.txt", 0, ALL_RIGHTS, wasi::FDFLAGS_SYNC)
            .map(|fd| unsafe { wasi::fd_close(fd) }.is_ok()),
    );
    show("path_open empty path", open(ROOT, 0, "", 0, ALL_RIGHTS, 0));
    if let Some(ro) = status(
        "path_open read only",
        open(ROOT, 0, "f.txt", 0, wasi::RIGHTS_FD_READ, 0),
    ) {
        show("fd_write on read only", write(ro, b"x"));
        show("fd_read on read only", read(ro, 2));
        unsafe { wasi::fd_close(ro) }.ok();
    }
    if let Some(wo) = status(
        "path_open write only",
        open(ROOT, 0, "f.txt", 0, wasi::RIGHTS_FD_WRITE, 0),
    ) {
        show("fd_read on write only", read(wo, 2));
        unsafe { wasi::fd_close(wo) }.ok();
    }
    show("fd_seek on stdout", unsafe {
        wasi::fd_seek(1, 0, wasi::WHENCE_CUR)
    });
    show("fd_read on stdout", read(1, 1));
    show("fd_write on stdin", write(0, b"x"));
}

fn times() {
    let Some(fd) = status(
        "path_open t.txt",
        open(ROOT, 0, "t.txt", wasi::OFLAGS_CREAT, ALL_RIGHTS, 0),
    ) else {
        return;
    };
    let times = |label: &str, fd: Fd| {
        show(
            label,
            unsafe { wasi::fd_filestat_get(fd) }.map(|s| (s.atim, s.mtim)),
        );
    };
    show("fd_filestat_set_times atim mtim", unsafe {
        wasi::fd_filestat_set_times(
            fd,
            1_000_000_000,
            2_000_000_000,
            wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_MTIM,
        )
    });
    times("times after set", fd);
    show("fd_filestat_set_times mtim only", unsafe {
        wasi::fd_filestat_set_times(fd, 0, 3_000_000_000, wasi::FSTFLAGS_MTIM)
    });
    times("times after mtim only", fd);
    show("fd_filestat_set_times atim and atim_now", unsafe {
        wasi::fd_filestat_set_times(fd, 1, 1, wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_ATIM_NOW)
    });
    show("fd_filestat_set_times mtim and mtim_now", unsafe {
        wasi::fd_filestat_set_times(fd, 1, 1, wasi::FSTFLAGS_MTIM | wasi::FSTFLAGS_MTIM_NOW)
    });
    show("fd_filestat_set_times mtim_now", unsafe {
        wasi::fd_filestat_set_times(fd, 0, 0, wasi::FSTFLAGS_MTIM_NOW)
    });
    show(
        "mtim_now is recent",
        unsafe { wasi::fd_filestat_get(fd) }.map(|s| s.mtim > 1_600_000_000_000_000_000),
    );
    let before = unsafe { wasi::fd_filestat_get(fd) }
        .map(|s| s.mtim)
        .unwrap_or(0);
    unsafe { wasi::fd_filestat_set_times(fd, 0, 5_000_000_000, wasi::FSTFLAGS_MTIM) }.ok();
    write(fd, b"changes the mtime").ok();
    show(
        "a write moves mtim",
        unsafe { wasi::fd_filestat_get(fd) }.map(|s| s.mtim > 5_000_000_000 && before > 0),
    );
    unsafe { wasi::fd_filestat_set_times(fd, 0, 5_000_000_000, wasi::FSTFLAGS_MTIM) }.ok();
    unsafe { wasi::fd_filestat_set_size(fd, 2) }.ok();
    show(
        "set_size moves mtim",
        unsafe { wasi::fd_filestat_get(fd) }.map(|s| s.mtim > 5_000_000_000),
    );
    show("path_filestat_set_times", unsafe {
        wasi::path_filestat_set_times(
            ROOT,
            0,
            "t.txt",
            7_000_000_000,
            8_000_000_000,
            wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_MTIM,
        )
    });
    times("times after path set", fd);
    show("path_filestat_set_times bad flags", unsafe {
        wasi::path_filestat_set_times(
            ROOT,
            0,
            "t.txt",
            1,
            1,
            wasi::FSTFLAGS_MTIM | wasi::FSTFLAGS_MTIM_NOW,
        )
    });
    show("path_filestat_set_times missing", unsafe {
        wasi::path_filestat_set_times(ROOT, 0, "none.txt", 1, 1, wasi::FSTFLAGS_MTIM)
    });
    show(
        "path_filestat_get times",
        unsafe { wasi::path_filestat_get(ROOT, 0, "t.txt") }.map(|s| (s.atim, s.mtim)),
    );
    unsafe { wasi::fd_close(fd) }.ok();
}

fn rights() {
    let Some(fd) = status(
        "path_open r.txt",
        open(ROOT, 0, "r.txt", wasi::OFLAGS_CREAT, ALL_RIGHTS, 0),
    ) else {
        return;
    };
    show("fd_fdstat_set_rights read only", unsafe {
        wasi::fd_fdstat_set_rights(
            fd,
            wasi::RIGHTS_FD_READ
                | wasi::RIGHTS_FD_SEEK
                | wasi::RIGHTS_FD_TELL
                | wasi::RIGHTS_FD_FILESTAT_GET,
            0,
        )
    });
    show(
        "rights after narrowing",
        fdstat(fd).map(|(_, _, base, inheriting)| (base, inheriting)),
    );
    show("fd_write after narrowing", write(fd, b"x"));
    show("fd_read after narrowing", read(fd, 1));
    show("fd_fdstat_set_rights widen", unsafe {
        wasi::fd_fdstat_set_rights(fd, ALL_RIGHTS, ALL_RIGHTS)
    });
    show("fd_write after widening", write(fd, b"x"));
    unsafe { wasi::fd_close(fd) }.ok();
    show(
        "path_open with no rights",
        open(ROOT, 0, "r.txt", 0, 0, 0).map(|fd| unsafe { wasi::fd_close(fd) }.is_ok()),
    );
}

fn directories() {
    show("path_create_directory d", unsafe {
        wasi::path_create_directory(ROOT, "d")
    });
    show("path_create_directory d again", unsafe {
        wasi::path_create_directory(ROOT, "d")
    });
    show("path_create_directory nested missing", unsafe {
        wasi::path_create_directory(ROOT, "x/y")
    });
    show("path_create_directory under file", unsafe {
        wasi::path_create_directory(ROOT, "f.txt/y")
    });
    show("path_create_directory d/e", unsafe {
        wasi::path_create_directory(ROOT, "d/e")
    });
    for name in ["d/a.txt", "d/b.txt"] {
        if let Ok(fd) = open(ROOT, 0, name, wasi::OFLAGS_CREAT, ALL_RIGHTS, 0) {
            write(fd, name.as_bytes()).ok();
            unsafe { wasi::fd_close(fd) }.ok();
        }
    }
    show(
        "path_open d with every right",
        open(ROOT, 0, "d", wasi::OFLAGS_DIRECTORY, ALL_RIGHTS, 0),
    );
    let Some(dir) = status(
        "path_open d",
        open(ROOT, 0, "d", wasi::OFLAGS_DIRECTORY, DIR_RIGHTS, 0),
    ) else {
        return;
    };
    show("fd_fdstat_get d", fdstat(dir));
    show("fd_readdir d", readdir(dir));
    show("fd_read on a directory", read(dir, 1));
    show("fd_write on a directory", write(dir, b"x"));
    show("fd_seek on a directory", unsafe {
        wasi::fd_seek(dir, 0, wasi::WHENCE_SET)
    });
    show(
        "fd_readdir on a file",
        open(ROOT, 0, "f.txt", 0, ALL_RIGHTS, 0).and_then(|fd| {
            let r = readdir(fd);
            unsafe { wasi::fd_close(fd) }.ok();
            r
        }),
    );
    show(
        "path_open d for writing",
        open(ROOT, 0, "d", 0, wasi::RIGHTS_FD_WRITE, 0),
    );
    show(
        "path_open d with trunc",
        open(ROOT, 0, "d", wasi::OFLAGS_TRUNC, ALL_RIGHTS, 0),
    );
    show(
        "path_open d/a.txt from d",
        open(dir, 0, "a.txt", 0, ALL_RIGHTS, 0).and_then(|fd| {
            let r = read(fd, 100);
            unsafe { wasi::fd_close(fd) }.ok();
            r
        }),
    );
    show(
        "path_open e from d",
        open(dir, 0, "e", 0, DIR_RIGHTS, 0).map(|fd| unsafe { wasi::fd_close(fd) }.is_ok()),
    );
    show(
        "path_open e/../a.txt from d",
        open(dir, 0, "e/../a.txt", 0, ALL_RIGHTS, 0)
            .map(|fd| unsafe { wasi::fd_close(fd) }.is_ok()),
    );
    show(
        "path_open ../f.txt from d",
        open(dir, 0, "../f.txt", 0, ALL_RIGHTS, 0),
    );
    show(
        "path_open e/../../f.txt from d",
        open(dir, 0, "e/../../f.txt", 0, ALL_RIGHTS, 0),
    );
    show(
        "path_open ../x from root",
        open(ROOT, 0, "../x", wasi::OFLAGS_CREAT, ALL_RIGHTS, 0),
    );
    show(
        "path_open absolute",
        open(ROOT, 0, "/f.txt", 0, ALL_RIGHTS, 0),
    );
    show(
        "path_filestat_get d",
        unsafe { wasi::path_filestat_get(ROOT, 0, "d") }
            .map(stat_of)
            .map(|(kind, _, _)| kind),
    );
    show(
        "path_filestat_get d/a.txt",
        unsafe { wasi::path_filestat_get(ROOT, 0, "d/a.txt") }.map(stat_of),
    );
    show(
        "path_filestat_get ../ from d",
        unsafe { wasi::path_filestat_get(dir, 0, "..") }.map(stat_of),
    );
    show("path_remove_directory not empty", unsafe {
        wasi::path_remove_directory(ROOT, "d")
    });
    show("path_remove_directory a file", unsafe {
        wasi::path_remove_directory(ROOT, "f.txt")
    });
    show("path_remove_directory missing", unsafe {
        wasi::path_remove_directory(ROOT, "nothing")
    });
    show("path_unlink_file a directory", unsafe {
        wasi::path_unlink_file(ROOT, "d")
    });
    show("path_unlink_file a directory/", unsafe {
        wasi::path_unlink_file(ROOT, "d/")
    });
    show("path_unlink_file file/", unsafe {
        wasi::path_unlink_file(ROOT, "f.txt/")
    });
    show("path_unlink_file missing", unsafe {
        wasi::path_unlink_file(ROOT, "nothing")
    });
    show("path_rename f.txt to d/g.txt", unsafe {
        wasi::path_rename(ROOT, "f.txt", ROOT, "d/g.txt")
    });
    show("path_rename missing", unsafe {
        wasi::path_rename(ROOT, "f.txt", ROOT, "h.txt")
    });
    show("path_rename file over directory", unsafe {
        wasi::path_rename(ROOT, "d/a.txt", ROOT, "d/e")
    });
    show("path_rename directory over file", unsafe {
        wasi::path_rename(ROOT, "d/e", ROOT, "d/b.txt")
    });
    show("path_rename directory into itself", unsafe {
        wasi::path_rename(ROOT, "d", ROOT, "d/e/d")
    });
    show("path_rename file over file", unsafe {
        wasi::path_rename(ROOT, "d/a.txt", ROOT, "d/b.txt")
    });
    show("path_rename directory", unsafe {
        wasi::path_rename(ROOT, "d/e", ROOT, "d/e2")
    });
    show("fd_readdir d after renames", readdir(dir));
    show(
        "path_create_directory then remove",
        unsafe { wasi::path_create_directory(ROOT, "gone") }
            .and_then(|()| unsafe { wasi::path_remove_directory(ROOT, "gone") }),
    );
    show("path_remove_directory d/e2", unsafe {
        wasi::path_remove_directory(ROOT, "d/e2")
    });
    unsafe { wasi::fd_close(dir) }.ok();
}

fn links() {
    show("path_symlink d/sl -> g.txt", unsafe {
        wasi::path_symlink("g.txt", ROOT, "d/sl")
    });
    show("path_symlink existing", unsafe {
        wasi::path_symlink("g.txt", ROOT, "d/sl")
    });
    show("path_readlink d/sl", readlink(ROOT, "d/sl"));
    show("path_readlink a file", readlink(ROOT, "d/g.txt"));
    show(
        "path_filestat_get d/sl follow",
        unsafe { wasi::path_filestat_get(ROOT, wasi::LOOKUPFLAGS_SYMLINK_FOLLOW, "d/sl") }
            .map(stat_of),
    );
    show(
        "path_filestat_get d/sl nofollow",
        unsafe { wasi::path_filestat_get(ROOT, 0, "d/sl") }
            .map(stat_of)
            .map(|(kind, _, _)| kind),
    );
    show(
        "path_open d/sl follow",
        open(
            ROOT,
            wasi::LOOKUPFLAGS_SYMLINK_FOLLOW,
            "d/sl",
            0,
            ALL_RIGHTS,
            0,
        )
        .and_then(|fd| {
            let r = read(fd, 100);
            unsafe { wasi::fd_close(fd) }.ok();
            r
        }),
    );
    show(
        "path_open d/sl nofollow",
        open(ROOT, 0, "d/sl", 0, ALL_RIGHTS, 0),
    );
    show("path_symlink dangling", unsafe {
        wasi::path_symlink("nowhere", ROOT, "dangling")
    });
    show(
        "path_open dangling follow",
        open(
            ROOT,
            wasi::LOOKUPFLAGS_SYMLINK_FOLLOW,
            "dangling",
            0,
            ALL_RIGHTS,
            0,
        ),
    );
    show("path_symlink escaping", unsafe {
        wasi::path_symlink("../../outside", ROOT, "escape")
    });
    show(
        "path_open escaping follow",
        open(
            ROOT,
            wasi::LOOKUPFLAGS_SYMLINK_FOLLOW,
            "escape",
            0,
            ALL_RIGHTS,
            0,
        ),
    );
    show("path_symlink absolute", unsafe {
        wasi::path_symlink("/d/g.txt", ROOT, "absolute")
    });
    show(
        "path_open absolute follow",
        open(
            ROOT,
            wasi::LOOKUPFLAGS_SYMLINK_FOLLOW,
            "absolute",
            0,
            ALL_RIGHTS,
            0,
        ),
    );
    show("path_symlink to directory", unsafe {
        wasi::path_symlink("d", ROOT, "dl")
    });
    show(
        "path_open through a symlinked directory",
        open(ROOT, 0, "dl/g.txt", 0, ALL_RIGHTS, 0).map(|fd| unsafe { wasi::fd_close(fd) }.is_ok()),
    );
    show("path_link d/g.txt to d/hard", unsafe {
        wasi::path_link(ROOT, 0, "d/g.txt", ROOT, "d/hard")
    });
    show(
        "path_filestat_get d/hard",
        unsafe { wasi::path_filestat_get(ROOT, 0, "d/hard") }.map(stat_of),
    );
    show("path_link existing", unsafe {
        wasi::path_link(ROOT, 0, "d/g.txt", ROOT, "d/hard")
    });
    show("path_link a directory", unsafe {
        wasi::path_link(ROOT, 0, "d", ROOT, "dhard")
    });
    if let Ok(fd) = open(ROOT, 0, "d/hard", 0, ALL_RIGHTS, 0) {
        unsafe { wasi::fd_seek(fd, 0, wasi::WHENCE_END) }.ok();
        write(fd, b"+hard").ok();
        unsafe { wasi::fd_close(fd) }.ok();
    }
    show(
        "path_open d/g.txt sees the link's write",
        open(ROOT, 0, "d/g.txt", 0, ALL_RIGHTS, 0).and_then(|fd| {
            let r = read(fd, 100).map(|s| s.replace('\0', "0"));
            unsafe { wasi::fd_close(fd) }.ok();
            r
        }),
    );
    show("path_unlink_file d/hard", unsafe {
        wasi::path_unlink_file(ROOT, "d/hard")
    });
    show(
        "path_filestat_get d/g.txt nlink",
        unsafe { wasi::path_filestat_get(ROOT, 0, "d/g.txt") }.map(stat_of),
    );
    show("path_unlink_file a symlink", unsafe {
        wasi::path_unlink_file(ROOT, "dangling")
    });
    show("path_remove_directory a symlink", unsafe {
        wasi::path_remove_directory(ROOT, "dl")
    });
}

fn descriptors() {
    let a = open(ROOT, 0, "d/b.txt", 0, ALL_RIGHTS, 0);
    let b = open(ROOT, 0, "d/g.txt", 0, ALL_RIGHTS, 0);
    let (Some(a), Some(b)) = (status("open a", a), status("open b", b)) else {
        return;
    };
    show("fd_renumber a to b", unsafe { wasi::fd_renumber(a, b) });
    show("fd_read b (was a)", read(b, 100));
    show("fd_close a after renumber", unsafe { wasi::fd_close(a) });
    show("fd_renumber to itself", unsafe { wasi::fd_renumber(b, b) });
    show("fd_renumber closed", unsafe { wasi::fd_renumber(a, b) });
    show("fd_renumber to unused", unsafe { wasi::fd_renumber(b, 77) });
    unsafe { wasi::fd_close(b) }.ok();
    show("fd_close stdin", unsafe { wasi::fd_close(0) });
    show("fd_read closed stdin", read(0, 1));
}

fn polling() {
    let subscription = |userdata: u64, tag: u8, u: wasi::SubscriptionUU| wasi::Subscription {
        userdata,
        u: wasi::SubscriptionU { tag, u },
    };
    let clock = wasi::SubscriptionUU {
        clock: wasi::SubscriptionClock {
            id: wasi::CLOCKID_MONOTONIC,
            timeout: 1_000_000,
            precision: 0,
            flags: 0,
        },
    };
    let subs = [subscription(1, wasi::EVENTTYPE_CLOCK.raw(), clock)];
    let mut events = [wasi::Event {
        userdata: 0,
        error: wasi::ERRNO_SUCCESS,
        type_: wasi::EVENTTYPE_CLOCK,
        fd_readwrite: wasi::EventFdReadwrite {
            nbytes: 0,
            flags: 0,
        },
    }; 4];
    let n = show("poll_oneoff clock", unsafe {
        wasi::poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), subs.len())
    });
    if n.is_some() {
        println!(
            "event: userdata {} type {} error {}",
            events[0].userdata,
            events[0].type_.raw(),
            events[0].error.name()
        );
    }
    let write_stdout = wasi::SubscriptionUU {
        fd_write: wasi::SubscriptionFdReadwrite { file_descriptor: 1 },
    };
    let subs = [
        subscription(2, wasi::EVENTTYPE_FD_WRITE.raw(), write_stdout),
        subscription(3, wasi::EVENTTYPE_CLOCK.raw(), clock),
    ];
    let n = show("poll_oneoff stdout and clock", unsafe {
        wasi::poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), subs.len())
    });
    if let Some(n) = n {
        let mut seen: Vec<(u64, u8, &str)> = events[..n]
            .iter()
            .map(|e| (e.userdata, e.type_.raw(), e.error.name()))
            .collect();
        seen.sort();
        println!("events: {seen:?}");
    }
    let bad_fd = wasi::SubscriptionUU {
        fd_read: wasi::SubscriptionFdReadwrite {
            file_descriptor: 99,
        },
    };
    let subs = [subscription(4, wasi::EVENTTYPE_FD_READ.raw(), bad_fd)];
    let n = show("poll_oneoff bad fd", unsafe {
        wasi::poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), subs.len())
    });
    if let Some(n) = n {
        let seen: Vec<(u64, &str)> = events[..n]
            .iter()
            .map(|e| (e.userdata, e.error.name()))
            .collect();
        println!("events: {seen:?}");
    }
    show("poll_oneoff nothing", unsafe {
        wasi::poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), 0)
    });
}

fn sockets() {
    let file = open(ROOT, 0, "d/g.txt", 0, ALL_RIGHTS, 0).unwrap_or(ROOT);
    show("sock_accept on a file", unsafe {
        wasi::sock_accept(file, 0)
    });
    let mut buf = [0u8; 4];
    show("sock_recv on a file", unsafe {
        wasi::sock_recv(
            file,
            &[wasi::Iovec {
                buf: buf.as_mut_ptr(),
                buf_len: 4,
            }],
            0,
        )
    });
    show("sock_send on a file", unsafe {
        wasi::sock_send(
            file,
            &[wasi::Ciovec {
                buf: buf.as_ptr(),
                buf_len: 4,
            }],
            0,
        )
    });
    show("sock_shutdown on a file", unsafe {
        wasi::sock_shutdown(file, wasi::SDFLAGS_RD)
    });
    show("sock_accept on a bad fd", unsafe {
        wasi::sock_accept(99, 0)
    });
}
