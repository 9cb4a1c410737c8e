;; The project's own Wasm test module: a WASI command that prints one known line to stdout.
;; Compiled with wabt's wat2wasm (Debian `wabt`); deploy.bundle.images.WASM_LINE is the line.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; the line at offset 16; one iovec {base, len} at offset 0; bytes written land at offset 8
  (data (i32.const 16) "labdeploy wasm: hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 22))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
