;; Faster string search for wasmoon's Lua build, spliced into its module by
;; src/vm/wasm.ts (patchModule). Each function here replaces or joins a
;; function of wasmoon's compiled C; this module is never instantiated. Calls
;; to the imports become calls to wasmoon's functions of the same name, calls
;; between the functions here calls to where they were placed.

(module
  (import "env" "memory" (memory 0))
  (import "env" "memcmp" (func $memcmp (param $a i32) (param $b i32) (param $n i32) (result i32)))

  ;; memchr(s, c, n): replaces musl's, which goes four bytes a step; string.find
  ;; spends most of its time here, a tenth of the seed pipeline's. Sixteen
  ;; bytes a step with SIMD, then byte by byte; never reads past s + n.
  (func $memchr (export "memchr") (param $s i32) (param $c i32) (param $n i32) (result i32)
    (local $v v128)  ;; c in every lane
    (local $m i32)   ;; lanes equal to c, one bit each
    (local.set $v (i8x16.splat (local.get $c)))
    (block $tail
      (loop $step
        (br_if $tail (i32.lt_u (local.get $n) (i32.const 16)))
        (if (local.tee $m (i8x16.bitmask (i8x16.eq (v128.load align=1 (local.get $s)) (local.get $v))))
          (then (return (i32.add (local.get $s) (i32.ctz (local.get $m))))))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (local.set $n (i32.sub (local.get $n) (i32.const 16)))
        (br $step)))
    (local.set $c (i32.and (local.get $c) (i32.const 255)))
    (block $done
      (loop $byte
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.eq (i32.load8_u (local.get $s)) (local.get $c))
          (then (return (local.get $s))))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $byte)))
    (i32.const 0))

  ;; find(s, c, n, rest, restLen): the first q in [s, s + n) with *q == c and
  ;; q[1 .. restLen] == rest, or NULL; reads nothing past s + n + restLen.
  ;;
  ;; string.find's plain search (lmemfind, inlined in str_find_aux) calls
  ;; memchr for the pattern's first byte, then memcmp for the rest, and starts
  ;; over at every false start: a packet of text has a 'p' every ~50 bytes, so
  ;; string.find(packet, "pcap") made ~17 such round trips a packet. patchModule
  ;; turns lmemfind's call to memchr into a call to this: sixteen positions a
  ;; step, keeping only those where the pattern's first two bytes both match,
  ;; each then checked with memcmp. lmemfind's own memcmp confirms what it
  ;; returns, and its loop ends.
  (func $find (export "find") (param $s i32) (param $c i32) (param $n i32) (param $rest i32) (param $restLen i32) (result i32)
    (local $v1 v128) (local $v2 v128)  ;; c, rest[0] in every lane
    (local $m i32)                     ;; candidate positions, one bit each
    (local $q i32)
    (if (i32.eqz (local.get $restLen))
      (then (return (call $memchr (local.get $s) (local.get $c) (local.get $n)))))
    (local.set $v1 (i8x16.splat (local.get $c)))
    (local.set $v2 (i8x16.splat (i32.load8_u (local.get $rest))))
    (block $tail
      (loop $step
        (br_if $tail (i32.lt_u (local.get $n) (i32.const 16)))
        ;; bytes s .. s+15 equal c and bytes s+1 .. s+16 equal rest[0]
        ;; (s + 16 < s + n + restLen: within the string)
        (local.set $m (i8x16.bitmask (v128.and
          (i8x16.eq (v128.load align=1 (local.get $s)) (local.get $v1))
          (i8x16.eq (v128.load offset=1 align=1 (local.get $s)) (local.get $v2)))))
        (block $none
          (loop $candidate  ;; each, lowest first
            (br_if $none (i32.eqz (local.get $m)))
            (local.set $q (i32.add (local.get $s) (i32.ctz (local.get $m))))
            (if (i32.eqz (call $memcmp (i32.add (local.get $q) (i32.const 1)) (local.get $rest) (local.get $restLen)))
              (then (return (local.get $q))))
            (local.set $m (i32.and (local.get $m) (i32.sub (local.get $m) (i32.const 1))))
            (br $candidate)))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (local.set $n (i32.sub (local.get $n) (i32.const 16)))
        (br $step)))
    (local.set $c (i32.and (local.get $c) (i32.const 255)))
    (block $done
      (loop $byte  ;; the last n < 16 positions
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.eq (i32.load8_u (local.get $s)) (local.get $c))
          (then
            (if (i32.eqz (call $memcmp (i32.add (local.get $s) (i32.const 1)) (local.get $rest) (local.get $restLen)))
              (then (return (local.get $s))))))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $byte)))
    (i32.const 0))
)
