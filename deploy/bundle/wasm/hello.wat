;; The verification pods' Wasm module: a WASI command that writes one line to stdout and exits 0.
;; Compiled with wabt's wat2wasm (Debian package wabt); crun runs it through WasmEdge when the
;; container carries the annotation module.wasm.image/variant=compat.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory 1)
  (export "memory" (memory 0))
  ;; iovec at 0: {buf = 16, len = 26}; bytes written land at 8; the text starts at 16
  (data (i32.const 0) "\10\00\00\00\1a\00\00\00")
  (data (i32.const 16) "hello from labdeploy wasm\n")
  (func $start (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
