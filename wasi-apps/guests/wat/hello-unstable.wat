;; hello-unstable: a hand-written command module that imports `fd_write` from the legacy
;; `wasi_unstable` namespace (WASI "preview 0") instead of `wasi_snapshot_preview1`, and prints
;; "hello world" to stdout. It is compiled from this text by wasi-apps/build.rs (the `wat`
;; crate). If fd_write reports an error, the module traps with `unreachable`.
(module
  (import "wasi_unstable" "fd_write"
    (func $fd_write (param $fd i32) (param $iovs i32) (param $iovs_len i32) (param $nwritten i32)
                    (result i32)))

  (memory (export "memory") 1)

  ;; The text at offset 16; one iovec {buf, len} at offset 0; nwritten lands at offset 8.
  (data (i32.const 16) "hello world\n")

  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 12))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then unreachable))))
