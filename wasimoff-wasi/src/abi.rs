//! WASI preview 1 ABI constants and struct layouts (`wasi_snapshot_preview1`, witx), plus the
//! few places where the legacy `wasi_unstable` ("preview 0") differs.

/// An errno value (`u16` on the wire, returned as `i32`).
pub type Errno = u16;

#[allow(missing_docs)]
pub mod errno {
    use super::Errno;
    pub const SUCCESS: Errno = 0;
    pub const TOOBIG: Errno = 1;
    pub const ACCES: Errno = 2;
    pub const AGAIN: Errno = 6;
    pub const BADF: Errno = 8;
    pub const EXIST: Errno = 20;
    pub const FAULT: Errno = 21;
    pub const FBIG: Errno = 22;
    pub const INVAL: Errno = 28;
    pub const IO: Errno = 29;
    pub const ISDIR: Errno = 31;
    pub const LOOP: Errno = 32;
    pub const NAMETOOLONG: Errno = 37;
    pub const NOENT: Errno = 44;
    pub const NOSYS: Errno = 52;
    pub const NOTDIR: Errno = 54;
    pub const NOTEMPTY: Errno = 55;
    pub const NOTSOCK: Errno = 57;
    pub const NOTSUP: Errno = 58;
    pub const OVERFLOW: Errno = 61;
    pub const PERM: Errno = 63;
    pub const SPIPE: Errno = 70;
    pub const NOTCAPABLE: Errno = 76;
}

#[allow(missing_docs)]
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SYMBOLIC_LINK: u8 = 7;
}

#[allow(missing_docs)]
pub mod oflags {
    pub const CREAT: u16 = 1;
    pub const DIRECTORY: u16 = 2;
    pub const EXCL: u16 = 4;
    pub const TRUNC: u16 = 8;
}

#[allow(missing_docs)]
pub mod fdflags {
    pub const APPEND: u16 = 1;
    pub const DSYNC: u16 = 1 << 1;
    pub const NONBLOCK: u16 = 1 << 2;
    pub const RSYNC: u16 = 1 << 3;
    pub const SYNC: u16 = 1 << 4;
    /// The synchronous-I/O flags, which neither host supports.
    pub const ANY_SYNC: u16 = DSYNC | RSYNC | SYNC;
}

/// `fstflags`: which timestamps `*_filestat_set_times` sets.
#[allow(missing_docs)]
pub mod fstflags {
    pub const ATIM: u16 = 1;
    pub const ATIM_NOW: u16 = 1 << 1;
    pub const MTIM: u16 = 1 << 2;
    pub const MTIM_NOW: u16 = 1 << 3;
}

/// `rights` (witx bit numbers), and the sets wasmtime-wasi reports, which this host reports too.
#[allow(missing_docs)]
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    /// Every right (bits 0..=29).
    pub const ALL: u64 = (1 << 30) - 1;
    /// A preopened directory's base rights.
    pub const PREOPEN_BASE: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES;
    /// A preopened directory's inheriting rights.
    pub const PREOPEN_INHERITING: u64 = PREOPEN_BASE
        | FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
    /// A directory opened with `path_open`: every right but seeking, writing and sizing.
    pub const DIRECTORY: u64 =
        ALL & !(FD_SEEK | FD_WRITE | FD_FILESTAT_SET_SIZE | PATH_FILESTAT_SET_SIZE);
}

/// `whence`: preview 1 numbering (`set=0, cur=1, end=2`).
#[allow(missing_docs)]
pub mod whence {
    pub const SET: u8 = 0;
    pub const CUR: u8 = 1;
    pub const END: u8 = 2;
    /// `wasi_unstable` numbers them `cur=0, end=1, set=2`; this maps them to preview 1.
    pub fn from_unstable(w: u8) -> Option<u8> {
        match w {
            0 => Some(CUR),
            1 => Some(END),
            2 => Some(SET),
            _ => None,
        }
    }
}

#[allow(missing_docs)]
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME: u32 = 2;
    pub const THREAD_CPUTIME: u32 = 3;
}

#[allow(missing_docs)]
pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

/// `lookupflags::symlink_follow`.
pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

/// `subclockflags::subscription_clock_abstime`.
pub const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;

/// Sizes of the structs the host writes or reads.
#[allow(missing_docs)]
pub mod size {
    pub const IOVEC: u32 = 8;
    pub const FDSTAT: u32 = 24;
    pub const FILESTAT: u32 = 64;
    pub const PRESTAT: u32 = 8;
    pub const DIRENT: u32 = 24;
    pub const SUBSCRIPTION: u32 = 48;
    pub const EVENT: u32 = 32;
}

/// `filestat` (64 bytes): dev, ino, filetype (u8 at 16), nlink, size, atim, mtim, ctim.
pub fn encode_filestat(ino: u64, filetype: u8, nlink: u64, size: u64, times: [u64; 3]) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[8..16].copy_from_slice(&ino.to_le_bytes());
    b[16] = filetype;
    b[24..32].copy_from_slice(&nlink.to_le_bytes());
    b[32..40].copy_from_slice(&size.to_le_bytes());
    for (i, time) in times.iter().enumerate() {
        b[40 + 8 * i..48 + 8 * i].copy_from_slice(&time.to_le_bytes());
    }
    b
}

/// `fdstat` (24 bytes): filetype (u8 at 0), flags (u16 at 2), rights base and inheriting.
pub fn encode_fdstat(filetype: u8, flags: u16, base: u64, inheriting: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[0] = filetype;
    b[2..4].copy_from_slice(&flags.to_le_bytes());
    b[8..16].copy_from_slice(&base.to_le_bytes());
    b[16..24].copy_from_slice(&inheriting.to_le_bytes());
    b
}

/// `dirent` header (24 bytes, the name follows): d_next, d_ino, d_namlen (u32), d_type (u8).
pub fn encode_dirent(next: u64, ino: u64, namlen: u32, filetype: u8) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[0..8].copy_from_slice(&next.to_le_bytes());
    b[8..16].copy_from_slice(&ino.to_le_bytes());
    b[16..20].copy_from_slice(&namlen.to_le_bytes());
    b[20] = filetype;
    b
}

/// `event` (32 bytes): userdata, error (u16 at 8), type (u8 at 10), nbytes (u64 at 16), flags.
pub fn encode_event(userdata: u64, error: Errno, kind: u8, nbytes: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&userdata.to_le_bytes());
    b[8..10].copy_from_slice(&error.to_le_bytes());
    b[10] = kind;
    b[16..24].copy_from_slice(&nbytes.to_le_bytes());
    b
}

/// Every function of `wasi_snapshot_preview1` (`wasi_unstable` has the same names).
pub const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// The import namespaces served with [`FUNCTIONS`].
pub const NAMESPACES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];
