//! System calls over a `Vec<u8>` memory and a fake clock.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;

use crate::abi::{self, errno, oflags, rights};
use crate::ctx::{Platform, Stop, WasiCtx, function_index};
use crate::fs::Fs;

#[derive(Default)]
struct FakeClock {
    now: Cell<u64>,
    /// How often the wall clock was read.
    reads: Cell<u32>,
}

impl Platform for FakeClock {
    fn realtime_ns(&self) -> u64 {
        self.reads.set(self.reads.get() + 1);
        1_700_000_000_000_000_000 + self.now.get()
    }
    fn monotonic_ns(&self) -> u64 {
        self.now.get()
    }
    fn resolution_ns(&self) -> u64 {
        1000
    }
    fn random(&self, buf: &mut [u8]) {
        buf.fill(7);
    }
    fn sleep_ns(&self, ns: u64) {
        self.now.set(self.now.get() + ns);
    }
}

struct Guest {
    ctx: WasiCtx,
    mem: Vec<u8>,
    clock: FakeClock,
}

impl Guest {
    fn new(args: &[&str], stdin: &[u8], cap: usize) -> Self {
        Guest {
            ctx: WasiCtx::new(
                args.iter().map(|s| (*s).to_owned()).collect(),
                vec!["A=1".into()],
                stdin.to_vec(),
                Fs::new(),
                cap,
            ),
            mem: vec![0; 65536],
            clock: FakeClock::default(),
        }
    }
    fn call(&mut self, name: &str, args: &[i64]) -> Result<i32, Stop> {
        let index = function_index(name).unwrap();
        self.ctx
            .call(&self.clock, &mut self.mem, index, args, false)
    }
    fn ok(&mut self, name: &str, args: &[i64]) {
        assert_eq!(self.call(name, args), Ok(0), "{name}");
    }
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.mem[at..at + 4].try_into().unwrap())
    }
    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.mem[at..at + 8].try_into().unwrap())
    }
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.mem[at..at + bytes.len()].copy_from_slice(bytes);
    }
    /// One iovec at 100 pointing at `buf`, `len` bytes.
    fn iovec(&mut self, buf: u32, len: u32) {
        self.put(100, &buf.to_le_bytes());
        self.put(104, &len.to_le_bytes());
    }
    fn open(&mut self, path: &str, oflags: u16, rights: u64, fdflags: u16) -> Result<u32, i32> {
        self.put(1000, path.as_bytes());
        match self.call(
            "path_open",
            &[
                3,
                0,
                1000,
                path.len() as i64,
                i64::from(oflags),
                rights as i64,
                0,
                i64::from(fdflags),
                200,
            ],
        ) {
            Ok(0) => Ok(self.u32_at(200)),
            Ok(e) => Err(e),
            Err(s) => panic!("{s:?}"),
        }
    }
}

#[test]
fn args_and_environ() {
    let mut g = Guest::new(&["a.wasm", "x y"], b"", 100);
    g.ok("args_sizes_get", &[0, 4]);
    assert_eq!((g.u32_at(0), g.u32_at(4)), (2, 11));
    g.ok("args_get", &[16, 64]);
    assert_eq!(g.u32_at(16), 64);
    assert_eq!(g.u32_at(20), 71);
    assert_eq!(&g.mem[64..75], b"a.wasm\0x y\0");
    g.ok("environ_sizes_get", &[0, 4]);
    assert_eq!((g.u32_at(0), g.u32_at(4)), (1, 4));
}

#[test]
fn stdio_capture_cap_and_stdin() {
    let mut g = Guest::new(&["a"], b"input", 8);
    g.put(300, b"hello world");
    g.iovec(300, 11);
    g.ok("fd_write", &[1, 100, 1, 200]);
    assert_eq!(g.u32_at(200), 11, "writes past the cap succeed");
    assert_eq!(g.ctx.stdout.data, b"hello wo");
    assert!(g.ctx.stdout.truncated);
    g.ok("fd_write", &[2, 100, 1, 200]);
    assert!(g.ctx.stderr.truncated);
    g.iovec(400, 3);
    g.ok("fd_read", &[0, 100, 1, 200]);
    assert_eq!((g.u32_at(200), &g.mem[400..403]), (3, &b"inp"[..]));
    g.ok("fd_read", &[0, 100, 1, 200]);
    g.ok("fd_read", &[0, 100, 1, 200]);
    assert_eq!(g.u32_at(200), 0, "EOF");
    assert_eq!(
        g.call("fd_seek", &[1, 0, 0, 200]),
        Ok(i32::from(errno::SPIPE))
    );
    assert_eq!(
        g.call("fd_write", &[9, 100, 1, 200]),
        Ok(i32::from(errno::BADF))
    );
}

#[test]
fn files_and_directories() {
    let mut g = Guest::new(&["a"], b"", 100);
    // prestat: fd 3 is "/".
    g.ok("fd_prestat_get", &[3, 200]);
    assert_eq!((g.mem[200], g.u32_at(204)), (0, 1));
    g.ok("fd_prestat_dir_name", &[3, 300, 1]);
    assert_eq!(g.mem[300], b'/');
    assert_eq!(
        g.call("fd_prestat_get", &[4, 200]),
        Ok(i32::from(errno::BADF))
    );
    // mkdir, create, write, append, seek, read.
    g.put(1000, b"d");
    g.ok("path_create_directory", &[3, 1000, 1]);
    let rw = rights::FD_READ | rights::FD_WRITE | rights::FD_SEEK | rights::FD_TELL;
    assert_eq!(g.open("d/f.txt", 0, rw, 0), Err(i32::from(errno::NOENT)));
    let fd = g.open("d/f.txt", oflags::CREAT, rw, 0).unwrap();
    assert_eq!(fd, 4);
    g.put(300, b"abcdef");
    g.iovec(300, 6);
    g.ok("fd_write", &[i64::from(fd), 100, 1, 200]);
    g.ok(
        "fd_seek",
        &[i64::from(fd), -2, i64::from(abi::whence::END), 200],
    );
    assert_eq!(g.u64_at(200), 4);
    g.iovec(400, 10);
    g.ok("fd_read", &[i64::from(fd), 100, 1, 200]);
    assert_eq!((g.u32_at(200), &g.mem[400..402]), (2, &b"ef"[..]));
    g.ok("fd_tell", &[i64::from(fd), 200]);
    assert_eq!(g.u64_at(200), 6);
    g.ok("fd_filestat_get", &[i64::from(fd), 500]);
    assert_eq!(
        (g.mem[516], g.u64_at(532)),
        (abi::filetype::REGULAR_FILE, 6)
    );
    g.ok("fd_close", &[i64::from(fd)]);
    assert_eq!(
        g.call("fd_close", &[i64::from(fd)]),
        Ok(i32::from(errno::BADF))
    );
    // Append mode writes at the end; O_EXCL refuses; O_TRUNC empties.
    let fd = g.open("d/f.txt", 0, rw, abi::fdflags::APPEND).unwrap();
    g.iovec(300, 2);
    g.ok("fd_write", &[i64::from(fd), 100, 1, 200]);
    assert_eq!(g.ctx.fs.size(g.ctx.fs.resolve(0, "d/f.txt").unwrap()), 8);
    assert_eq!(
        g.open("d/f.txt", oflags::CREAT | oflags::EXCL, rw, 0),
        Err(i32::from(errno::EXIST))
    );
    let read_only = g.open("d/f.txt", 0, rights::FD_READ, 0).unwrap();
    assert_eq!(
        g.call("fd_write", &[i64::from(read_only), 100, 1, 200]),
        Ok(i32::from(errno::BADF))
    );
    g.open("d/f.txt", oflags::TRUNC, rw, 0).unwrap();
    assert_eq!(g.ctx.fs.size(g.ctx.fs.resolve(0, "d/f.txt").unwrap()), 0);
    assert_eq!(
        g.open("../x", oflags::CREAT, rw, 0),
        Err(i32::from(errno::PERM))
    );
    assert_eq!(
        g.open("d/f.txt", oflags::DIRECTORY, rw, 0),
        Err(i32::from(errno::NOTDIR))
    );
    // path_filestat_get, readdir, rename, unlink, rmdir.
    g.put(1000, b"d");
    g.ok("path_filestat_get", &[3, 0, 1000, 1, 500]);
    assert_eq!(g.mem[516], abi::filetype::DIRECTORY);
    let dir = g
        .open("d", oflags::DIRECTORY, rights::DIRECTORY, 0)
        .unwrap();
    g.ok("fd_readdir", &[i64::from(dir), 2000, 4096, 0, 200]);
    let used = g.u32_at(200) as usize;
    assert_eq!(used, 3 * 24 + 1 + 2 + 5);
    assert_eq!(&g.mem[2000 + 24..2000 + 25], b".");
    assert_eq!(&g.mem[2000 + 3 * 24 + 3..2000 + 3 * 24 + 8], b"f.txt");
    // A small buffer is filled completely (the guest then retries with a bigger one).
    g.ok("fd_readdir", &[i64::from(dir), 2000, 30, 0, 200]);
    assert_eq!(g.u32_at(200), 30);
    g.put(1000, b"d/f.txt");
    g.put(1100, b"g.txt");
    g.ok("path_rename", &[3, 1000, 7, 3, 1100, 5]);
    g.put(1000, b"d");
    assert_eq!(g.call("path_remove_directory", &[3, 1000, 1]), Ok(0));
    g.put(1000, b"g.txt");
    g.ok("path_unlink_file", &[3, 1000, 5]);
    assert!(g.ctx.fs.entries(0).unwrap().is_empty());
}

#[test]
fn clocks_random_poll_and_exit() {
    let mut g = Guest::new(&["a"], b"", 100);
    g.ok("clock_time_get", &[1, 0, 200]);
    let before = g.u64_at(200);
    // One relative clock subscription of 50 ms.
    let mut sub = [0u8; 48];
    sub[0..8].copy_from_slice(&42u64.to_le_bytes());
    sub[16..20].copy_from_slice(&abi::clockid::MONOTONIC.to_le_bytes());
    sub[24..32].copy_from_slice(&50_000_000u64.to_le_bytes());
    g.put(300, &sub);
    g.ok("poll_oneoff", &[300, 400, 1, 200]);
    assert_eq!(g.u32_at(200), 1);
    assert_eq!(g.u64_at(400), 42);
    g.ok("clock_time_get", &[1, 0, 200]);
    assert_eq!(g.u64_at(200) - before, 50_000_000);
    assert_eq!(
        g.call("poll_oneoff", &[300, 400, 0, 200]),
        Ok(i32::from(errno::INVAL))
    );
    g.ok("random_get", &[600, 16]);
    assert_eq!(&g.mem[600..616], &[7; 16]);
    // The deadline stops a long sleep at the deadline.
    g.ctx.deadline_ns = Some(g.clock.now.get() + 10_000_000);
    assert_eq!(
        g.call("poll_oneoff", &[300, 400, 1, 200]),
        Err(Stop::Deadline)
    );
    assert_eq!(g.call("sched_yield", &[]), Err(Stop::Deadline));
    g.ctx.deadline_ns = None;
    assert_eq!(
        g.call("sock_accept", &[0, 0, 0]),
        Ok(i32::from(errno::NOTSOCK))
    );
    assert_eq!(g.call("proc_exit", &[3]), Err(Stop::Exit(3)));
    assert_eq!(g.ctx.exit_status, Some(3));
    assert_eq!(g.call("fd_write", &[1, 100, 1, 200]), Ok(0));
}

/// Times are those of the call that changed them; calls that change nothing do not read the
/// clock (in browsers a read crosses into JS), writes to stdout above all.
#[test]
fn timestamps_come_from_the_clock_only_when_something_changes() {
    let mut g = Guest::new(&["a"], b"", 100);
    let epoch = 1_700_000_000_000_000_000_u64;
    let times = |g: &mut Guest, fd: u32| {
        g.ok("fd_filestat_get", &[i64::from(fd), 500]);
        (g.u64_at(540), g.u64_at(548), g.u64_at(556))
    };
    g.put(300, b"hello\n");
    g.iovec(300, 6);
    g.ok("fd_write", &[1, 100, 1, 200]);
    assert_eq!(g.clock.reads.get(), 0, "a write to stdout read the clock");

    g.clock.now.set(10);
    let rw = rights::FD_READ | rights::FD_WRITE | rights::FD_FILESTAT_SET_TIMES;
    let fd = g.open("f", oflags::CREAT, rw, 0).unwrap();
    assert_eq!(g.clock.reads.get(), 1, "one read for the whole call");
    assert_eq!(times(&mut g, fd), (epoch + 10, epoch + 10, epoch + 10));
    assert_eq!(g.clock.reads.get(), 1, "reading times changed them");

    g.clock.now.set(20);
    g.iovec(300, 6);
    g.ok("fd_write", &[i64::from(fd), 100, 1, 200]);
    assert_eq!(times(&mut g, fd), (epoch + 10, epoch + 20, epoch + 20));

    // A given access time and "now" for the modification time.
    g.clock.now.set(30);
    let flags = abi::fstflags::ATIM | abi::fstflags::MTIM_NOW;
    g.ok(
        "fd_filestat_set_times",
        &[i64::from(fd), 5, 999, i64::from(flags)],
    );
    assert_eq!(times(&mut g, fd), (5, epoch + 30, epoch + 30));
    // Neither: only the status-change time moves.
    g.clock.now.set(40);
    g.ok("fd_filestat_set_times", &[i64::from(fd), 0, 0, 0]);
    assert_eq!(times(&mut g, fd), (5, epoch + 30, epoch + 40));
    let reads = g.clock.reads.get();
    g.ok("fd_write", &[2, 100, 1, 200]);
    assert_eq!(
        g.clock.reads.get(),
        reads,
        "a write to stderr read the clock"
    );
}
