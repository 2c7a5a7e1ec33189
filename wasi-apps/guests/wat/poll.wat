;; poll: a hand-written command module that waits in `poll_oneoff` in the ways compiled guests
;; rarely do, to test that hosts bound and answer them. It is compiled from this text by
;; wasi-apps/build.rs (the `wat` crate).
;;
;;   poll <mode> [<ms>]      (<ms>: decimal milliseconds, default 0)
;;
;; modes (the first letter counts):
;;   rel       one relative monotonic clock of <ms>                        (userdata 1)
;;   abs       one absolute monotonic clock at now + <ms>                   (userdata 1)
;;   wall      one absolute realtime clock at now + <ms>                    (userdata 1)
;;   two       a relative clock of 1000 s (userdata 1) and one of <ms> (userdata 2)
;;   mixed     a relative clock of <ms> (userdata 1) and fd_read on stdin (userdata 2)
;;   loop      `mixed` again and again, forever
;;   unstable  `rel` through `wasi_unstable.poll_oneoff` (56-byte subscriptions)
;;   stdin     reads stdin to its end, then reads once more (it must stay at the end)
;;
;; After one poll it prints `poll: n=<events> u=<userdata> t=<type> e=<errno>` (of the first
;; event) and exits 0; if poll_oneoff fails, `poll: errno=<errno>` and exit 1. `stdin` prints
;; `stdin: <n> bytes`. Unknown modes print the usage and exit 2.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_unstable" "poll_oneoff"
    (func $poll_oneoff_unstable (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; Memory map:
  ;;     0  iovec {buf, len}; 8: nwritten / nread; 12: nevents
  ;;    16  a clock reading (u64); 24: argc; 28: argv buffer size
  ;;   256  subscriptions (two of 48 bytes, or one of 56)
  ;;   512  events (two of 32 bytes)
  ;;  1024  the output line; 2048..2080: digits
  ;;  3072  strings
  ;;  4096  argv pointers (up to 1024); 8192..65536: argv strings
  ;; 65536  the stdin buffer (64 KiB)
  (memory (export "memory") 2)

  (global $cursor (mut i32) (i32.const 0))

  (data (i32.const 3072) "poll: n=")
  (data (i32.const 3088) " u=")
  (data (i32.const 3096) " t=")
  (data (i32.const 3104) " e=")
  (data (i32.const 3112) "\n")
  (data (i32.const 3120) "poll: errno=")
  (data (i32.const 3136) "stdin: ")
  (data (i32.const 3144) " bytes")
  (data (i32.const 3152) "poll: looping")
  (data (i32.const 3168) "usage: poll rel|abs|wall|two|mixed|loop|unstable|stdin [<ms>]")

  ;; Appends `len` bytes at `ptr` to the output line.
  (func $append (param $ptr i32) (param $len i32)
    (memory.copy (i32.add (i32.const 1024) (global.get $cursor)) (local.get $ptr) (local.get $len))
    (global.set $cursor (i32.add (global.get $cursor) (local.get $len))))

  ;; Appends `x` in decimal.
  (func $append_u64 (param $x i64)
    (local $start i32)
    (local.set $start (i32.const 2080))
    (loop $digits
      (local.set $start (i32.sub (local.get $start) (i32.const 1)))
      (i32.store8 (local.get $start)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $x) (i64.const 10)))))
      (local.set $x (i64.div_u (local.get $x) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $x) (i64.const 0))))
    (call $append (local.get $start) (i32.sub (i32.const 2080) (local.get $start))))

  ;; Prints the output line with a newline and starts a new one.
  (func $flush
    (call $append (i32.const 3112) (i32.const 1))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (global.get $cursor))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (global.set $cursor (i32.const 0)))

  ;; Writes a clock subscription (preview 1 layout) at `ptr`.
  (func $clock (param $ptr i32) (param $userdata i64) (param $id i32) (param $timeout i64)
               (param $flags i32)
    (i64.store (local.get $ptr) (local.get $userdata))
    (i32.store8 offset=8 (local.get $ptr) (i32.const 0))
    (i32.store offset=16 (local.get $ptr) (local.get $id))
    (i64.store offset=24 (local.get $ptr) (local.get $timeout))
    (i64.store offset=32 (local.get $ptr) (i64.const 0))
    (i32.store16 offset=40 (local.get $ptr) (local.get $flags)))

  ;; Writes an fd_read (tag 1) or fd_write (tag 2) subscription at `ptr`.
  (func $fd_sub (param $ptr i32) (param $userdata i64) (param $tag i32) (param $fd i32)
    (i64.store (local.get $ptr) (local.get $userdata))
    (i32.store8 offset=8 (local.get $ptr) (local.get $tag))
    (i32.store offset=16 (local.get $ptr) (local.get $fd)))

  ;; The time of clock `id` in nanoseconds.
  (func $now (param $id i32) (result i64)
    (if (call $clock_time_get (local.get $id) (i64.const 1) (i32.const 16)) (then unreachable))
    (i64.load (i32.const 16)))

  ;; Prints the outcome of a poll_oneoff call that returned `errno`; exits 1 on an error.
  (func $report (param $errno i32)
    (if (local.get $errno)
      (then
        (call $append (i32.const 3120) (i32.const 12))
        (call $append_u64 (i64.extend_i32_u (local.get $errno)))
        (call $flush)
        (call $proc_exit (i32.const 1))))
    (call $append (i32.const 3072) (i32.const 8))
    (call $append_u64 (i64.extend_i32_u (i32.load (i32.const 12))))
    (call $append (i32.const 3088) (i32.const 3))
    (call $append_u64 (i64.load (i32.const 512)))
    (call $append (i32.const 3096) (i32.const 3))
    (call $append_u64 (i64.extend_i32_u (i32.load8_u (i32.const 522))))
    (call $append (i32.const 3104) (i32.const 3))
    (call $append_u64 (i64.extend_i32_u (i32.load16_u (i32.const 520))))
    (call $flush))

  (func $mixed (param $ns i64) (result i32)
    (call $clock (i32.const 256) (i64.const 1) (i32.const 1) (local.get $ns) (i32.const 0))
    (call $fd_sub (i32.const 304) (i64.const 2) (i32.const 1) (i32.const 0))
    (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 2) (i32.const 12)))

  (func (export "_start")
    (local $argc i32) (local $mode i32) (local $p i32) (local $c i32) (local $ms i64)
    (local $ns i64) (local $total i64) (local $ends i32)
    (if (call $args_sizes_get (i32.const 24) (i32.const 28)) (then unreachable))
    (local.set $argc (i32.load (i32.const 24)))
    (if (i32.or (i32.gt_u (local.get $argc) (i32.const 1024))
                (i32.gt_u (i32.load (i32.const 28)) (i32.const 57344)))
      (then unreachable))
    (if (call $args_get (i32.const 4096) (i32.const 8192)) (then unreachable))
    (if (i32.ge_u (local.get $argc) (i32.const 2))
      (then (local.set $mode (i32.load8_u (i32.load (i32.const 4100))))))
    (if (i32.ge_u (local.get $argc) (i32.const 3))
      (then
        (local.set $p (i32.load (i32.const 4104)))
        (block $done
          (loop $digits
            (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
            (br_if $done (i32.ge_u (local.get $c) (i32.const 10)))
            (local.set $ms (i64.add (i64.mul (local.get $ms) (i64.const 10))
                                    (i64.extend_i32_u (local.get $c))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $digits)))))
    (local.set $ns (i64.mul (local.get $ms) (i64.const 1000000)))

    ;; rel
    (if (i32.eq (local.get $mode) (i32.const 114))
      (then
        (call $clock (i32.const 256) (i64.const 1) (i32.const 1) (local.get $ns) (i32.const 0))
        (call $report
          (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 12)))
        (return)))
    ;; abs
    (if (i32.eq (local.get $mode) (i32.const 97))
      (then
        (call $clock (i32.const 256) (i64.const 1) (i32.const 1)
          (i64.add (call $now (i32.const 1)) (local.get $ns)) (i32.const 1))
        (call $report
          (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 12)))
        (return)))
    ;; wall
    (if (i32.eq (local.get $mode) (i32.const 119))
      (then
        (call $clock (i32.const 256) (i64.const 1) (i32.const 0)
          (i64.add (call $now (i32.const 0)) (local.get $ns)) (i32.const 1))
        (call $report
          (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 12)))
        (return)))
    ;; two
    (if (i32.eq (local.get $mode) (i32.const 116))
      (then
        (call $clock (i32.const 256) (i64.const 1) (i32.const 1) (i64.const 1000000000000)
          (i32.const 0))
        (call $clock (i32.const 304) (i64.const 2) (i32.const 1) (local.get $ns) (i32.const 0))
        (call $report
          (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 2) (i32.const 12)))
        (return)))
    ;; mixed
    (if (i32.eq (local.get $mode) (i32.const 109))
      (then
        (call $report (call $mixed (local.get $ns)))
        (return)))
    ;; loop
    (if (i32.eq (local.get $mode) (i32.const 108))
      (then
        (call $append (i32.const 3152) (i32.const 13))
        (call $flush)
        (loop $forever
          (if (local.tee $c (call $mixed (local.get $ns)))
            (then (call $report (local.get $c))))
          (br $forever))))
    ;; unstable: userdata, tag, then the clock: identifier, id, timeout, precision, flags
    (if (i32.eq (local.get $mode) (i32.const 117))
      (then
        (i64.store (i32.const 256) (i64.const 1))
        (i32.store8 (i32.const 264) (i32.const 0))
        (i64.store (i32.const 272) (i64.const 1))
        (i32.store (i32.const 280) (i32.const 1))
        (i64.store (i32.const 288) (local.get $ns))
        (i64.store (i32.const 296) (i64.const 0))
        (i32.store16 (i32.const 304) (i32.const 0))
        (call $report
          (call $poll_oneoff_unstable (i32.const 256) (i32.const 512) (i32.const 1)
            (i32.const 12)))
        (return)))
    ;; stdin
    (if (i32.eq (local.get $mode) (i32.const 115))
      (then
        (block $end
          (loop $read
            (i32.store (i32.const 0) (i32.const 65536))
            (i32.store (i32.const 4) (i32.const 65536))
            (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
              (then unreachable))
            (if (i32.eqz (i32.load (i32.const 8)))
              (then
                (local.set $ends (i32.add (local.get $ends) (i32.const 1)))
                (br_if $end (i32.eq (local.get $ends) (i32.const 2)))))
            (local.set $total
              (i64.add (local.get $total) (i64.extend_i32_u (i32.load (i32.const 8)))))
            (br $read)))
        (call $append (i32.const 3136) (i32.const 7))
        (call $append_u64 (local.get $total))
        (call $append (i32.const 3144) (i32.const 6))
        (call $flush)
        (return)))
    (call $append (i32.const 3168) (i32.const 61))
    (call $flush)
    (call $proc_exit (i32.const 2))))
