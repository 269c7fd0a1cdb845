;; A checksum of the code caches riff reads at start (src/vm/wasm-cache.ts
;; checksum): V8 does not check a cache's bytes, and one damaged on disk
;; crashed riff at every start, or ran damaged machine code. FNV-1a over
;; 64-bit words: a few tenths of a millisecond for the Lua module's 0.7 MB,
;; where the same loop in JavaScript, run once at start, took 7-9 ms.
;; The bytes are at address 0, padded with zeros to a multiple of 8.
(module
  (memory (export "memory") 1)
  (func (export "fnv64") (param $len i32) (result i64)
    (local $at i32)
    (local $h i64)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done
      (loop $words
        (br_if $done (i32.ge_u (local.get $at) (local.get $len)))
        (local.set $h
          (i64.mul
            (i64.xor (local.get $h) (i64.load (local.get $at)))
            (i64.const 0x100000001b3)))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (br $words)))
    (local.get $h)))
