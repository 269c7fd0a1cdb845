;; riff's own WebAssembly functions, linked into a Lua instance's memory and
;; function table beside wasmoon's code (src/vm/bridge.ts loads the assembled
;; module; its Bridge interface describes each export):
;;
;;   alloc(ud, ptr, osize, nsize)   Lua's allocator: free lists by size class
;;                                  for small blocks, the --lua-memory cap;
;;                                  a refusal is told to JS (refused) first
;;   fill(L, base, count, meta)     push a batch's packets into the table on
;;                                  top of the stack, copying their headers
;;   enter(L)                       a Lua C function: note the coroutine in
;;                                  argument 1 as the running one (or none),
;;                                  where the watchdog can read it
;;   out_write(L), out_pending(L),  Lua C functions behind io.write and
;;   out_flush(L)                   print: stdout is buffered here, in
;;                                  WebAssembly memory, and handed to JS
;;                                  (out_js) whole when flushed
;;
;; They run once or more per packet. Written in JS they cost a crossing from
;; WebAssembly into JS and back on every Lua allocation and two crossings out
;; of JS per packet; here they call wasmoon's exports (realloc, free,
;; lua_pushlstring, lua_rawseti, ...) directly, WebAssembly to WebAssembly.
;;
;; The module has no memory of its own: it works in wasmoon's (shared, so
;; other threads can reach it), and keeps its state in globals that JS sets
;; and reads. Hence WebAssembly text rather than C: C would want a stack and
;; data in linear memory that is wasmoon's.

(module
  (type $realloc (func (param i32 i32) (result i32)))
  (type $free (func (param i32)))
  (type $pushlstring (func (param i32 i32 i32) (result i32)))
  (type $rawseti (func (param i32 i32 i64)))
  (type $alloc (func (param i32 i32 i32 i32) (result i32)))
  (type $cfunction (func (param i32) (result i32)))
  (type $pushinteger (func (param i32 i64)))
  (type $write (func (param i32 i32)))

  (import "env" "memory" (memory 0 65536 shared))
  ;; wasmoon's exports (lua.h's signatures; lua_Integer is i64)
  (import "env" "realloc" (func $realloc (type $realloc)))
  (import "env" "free" (func $free (type $free)))
  (import "env" "lua_pushlstring" (func $lua_pushlstring (type $pushlstring)))
  (import "env" "lua_rawseti" (func $lua_rawseti (type $rawseti)))
  (import "env" "lua_tothread" (func $lua_tothread (param $L i32) (param $idx i32) (result i32)))
  (import "env" "lua_gettop" (func $lua_gettop (type $cfunction)))
  (import "env" "lua_type" (func $lua_type (param $L i32) (param $idx i32) (result i32)))
  (import "env" "lua_tolstring" (func $lua_tolstring (param $L i32) (param $idx i32) (param $len i32) (result i32)))
  (import "env" "lua_pushinteger" (func $lua_pushinteger (type $pushinteger)))
  (import "env" "lua_gethook" (func $lua_gethook (param $L i32) (result i32)))
  (import "env" "lua_gethookmask" (func $lua_gethookmask (param $L i32) (result i32)))
  (import "env" "lua_gethookcount" (func $lua_gethookcount (param $L i32) (result i32)))
  (import "env" "lua_sethook" (func $lua_sethook (param $L i32) (param $f i32) (param $mask i32) (param $count i32)))
  ;; JS: write bytes [p, p + len) to stdout, now
  (import "env" "out_js" (func $out_js (type $write)))
  ;; JS: the allocator is about to refuse growing `ptr` (NULL: a fresh
  ;; block); Lua will raise "not enough memory" without a position, so JS
  ;; notes the script's line now, while the frames that made the request
  ;; still exist (src/vm/where.ts)
  (import "env" "refused" (func $refused (param $ptr i32)))

  (export "alloc" (func $alloc))
  (export "fill" (func $fill))
  (export "enter" (func $enter))
  (export "used" (global $used))
  (export "limit" (global $limit))
  (export "slot" (global $slot))
  (export "out_write" (func $out_write))
  (export "out_pending" (func $out_pending))
  (export "out_flush" (func $out_flush))
  (export "out" (global $out))
  (export "outCap" (global $outCap))
  (export "scratch" (global $scratch))
  (export "heads" (global $heads))

  ;; ------------------------------------------------------------ allocator
  ;;
  ;; Lua tells the allocator each block's size when it frees or resizes it,
  ;; so blocks up to SMALL = 2048 bytes need no header: they come from free
  ;; lists, one per 8-byte size class, refilled from CHUNK = 256 KiB pieces of
  ;; malloc. A packet's strings and tables are a handful of such blocks, and
  ;; emmalloc's bookkeeping behind two cross-module calls was about a tenth of
  ;; the seed pipeline's time. Larger blocks go to realloc and free. Free-list
  ;; memory stays with the VM for its life (reused, never returned), which is
  ;; what a Lua heap settles into anyway; the --lua-memory cap counts what Lua
  ;; asked for.
  ;;
  ;; A block recorded at size s <= SMALL is of class(s) exactly, from its
  ;; class's free list or chunk piece; one recorded above SMALL always came
  ;; from malloc, so only those reach free and realloc. A resize that changes
  ;; the class moves the block, shrinking too: a block shrunk in place and
  ;; freed later at its new size would join a smaller class's list, its
  ;; tail lost for good, and a pattern Lua repeats (a coroutine's stack
  ;; shrunk at each collection and grown again by the next packet) then
  ;; took fresh chunk memory each time while the smaller class's list grew:
  ;; the VM's memory grew with the packets (by tens of bytes a packet in
  ;; lua/examples/traffic.lua) while the Lua heap stayed flat.
  ;;
  ;; A block of n bytes (1 .. SMALL) is of class (n + 7) >> 3, 1 .. 256; the
  ;; head of its free list is word `class` of $heads, an array of
  ;; SIZE_CLASSES = SMALL / 8 + 1 words (src/vm/bridge.ts) that JS zeroes and
  ;; places before Lua allocates. A free block's first word links the next.

  (global $used (mut i32) (i32.const 0))    ;; bytes Lua holds now
  (global $limit (mut i32) (i32.const 0))   ;; the cap in bytes (unsigned), 0 = none
  (global $slot (mut i32) (i32.const 0))    ;; where enter() writes; 0 = nowhere yet
  (global $out (mut i32) (i32.const 0))     ;; stdout buffer: address (bytes used: the word below, $outLen)
  (global $outCap (mut i32) (i32.const 0))  ;;   capacity
  (global $scratch (mut i32) (i32.const 0)) ;; 8 bytes for lua_tolstring's length
  (global $heads (mut i32) (i32.const 0))   ;; the free lists' heads
  (global $bump (mut i32) (i32.const 0))    ;; the unused rest of the last chunk:
  (global $bumpEnd (mut i32) (i32.const 0)) ;;   [bump, bumpEnd)

  ;; lua_Alloc: free when nsize is 0, else allocate (ptr NULL) or resize to
  ;; nsize; NULL when refused. osize is ptr's size, or a type tag when ptr is
  ;; NULL. Growth past the cap is refused: Lua turns NULL into "not enough
  ;; memory".
  (func $alloc (type $alloc) (param $ud i32) (param $ptr i32) (param $osize i32) (param $nsize i32) (result i32)
    (local $delta i32) (local $p i32)
    (if (i32.eqz (local.get $nsize))
      (then
        (if (local.get $ptr)
          (then
            (global.set $used (i32.sub (global.get $used) (local.get $osize)))
            (if (i32.le_u (local.get $osize) (i32.const 2048))
              (then (call $give (local.get $ptr) (local.get $osize)))
              (else (call $free (local.get $ptr))))))
        (return (i32.const 0))))
    (local.set $delta
      (select (i32.sub (local.get $nsize) (local.get $osize)) (local.get $nsize) (local.get $ptr)))
    (if (i32.gt_s (local.get $delta) (i32.const 0))
      (then
        (if (global.get $limit)
          (then
            ;; in 64 bits: used + delta may pass 4 GiB
            (if (i64.gt_u
                  (i64.add (i64.extend_i32_u (global.get $used)) (i64.extend_i32_s (local.get $delta)))
                  (i64.extend_i32_u (global.get $limit)))
              (then
                (call $refused (local.get $ptr))
                (return (i32.const 0))))))))
    (block $placed
      ;; a fresh block: from a free list, or malloc
      (if (i32.eqz (local.get $ptr))
        (then
          (local.set $p
            (if (result i32) (i32.le_u (local.get $nsize) (i32.const 2048))
              (then (call $take (local.get $nsize)))
              (else (call $realloc (i32.const 0) (local.get $nsize)))))
          (br $placed)))
      ;; shrinking: realloc when both sizes are malloc's; in place within the
      ;; class; else a block of the smaller class, the bytes copied, the old
      ;; one back where it came from (kept in place only if there is no
      ;; memory for the new one: a shrink is not refused)
      (if (i32.le_u (local.get $nsize) (local.get $osize))
        (then
          (if (i32.gt_u (local.get $nsize) (i32.const 2048))
            (then
              (local.set $p (call $realloc (local.get $ptr) (local.get $nsize)))
              (br $placed)))
          (local.set $p (local.get $ptr))
          (if (i32.le_u (local.get $osize) (i32.const 2048))
            (then
              (br_if $placed (i32.eq
                (i32.shr_u (i32.add (local.get $nsize) (i32.const 7)) (i32.const 3))
                (i32.shr_u (i32.add (local.get $osize) (i32.const 7)) (i32.const 3))))))
          (if (local.tee $p (call $take (local.get $nsize)))
            (then
              (memory.copy (local.get $p) (local.get $ptr) (local.get $nsize))
              (if (i32.le_u (local.get $osize) (i32.const 2048))
                (then (call $give (local.get $ptr) (local.get $osize)))
                (else (call $free (local.get $ptr)))))
            (else (local.set $p (local.get $ptr))))
          (br $placed)))
      ;; growing a malloc block
      (if (i32.eqz (i32.le_u (local.get $osize) (i32.const 2048)))
        (then
          (local.set $p (call $realloc (local.get $ptr) (local.get $nsize)))
          (br $placed)))
      ;; growing within the size class: in place
      (local.set $p (local.get $ptr))
      (if (i32.le_u (local.get $nsize) (i32.const 2048))
        (then
          (br_if $placed (i32.eq
            (i32.shr_u (i32.add (local.get $nsize) (i32.const 7)) (i32.const 3))
            (i32.shr_u (i32.add (local.get $osize) (i32.const 7)) (i32.const 3))))))
      ;; moving to a larger class, or out to malloc: a fresh block, as above
      (if (local.tee $p
            (if (result i32) (i32.le_u (local.get $nsize) (i32.const 2048))
              (then (call $take (local.get $nsize)))
              (else (call $realloc (i32.const 0) (local.get $nsize)))))
        (then
          (memory.copy (local.get $p) (local.get $ptr) (local.get $osize))
          (call $give (local.get $ptr) (local.get $osize)))))
    (if (local.get $p)
      (then (global.set $used (i32.add (global.get $used) (local.get $delta))))
      (else (call $refused (local.get $ptr))))
    (local.get $p))

  ;; ------------------------------------------------------------ batches

  ;; fill(L, base, count, meta): push the packets of the batch of `count`
  ;; records at `base` into the table on top of L's stack as T[1 .. n],
  ;; skipping those filtered out or sharded to another worker, and copy
  ;; packet i's record header to meta + (i - 1) * HDR; returns n.
  ;; The record layout is src/capture/batch.ts's: a header of HDR = 40 bytes
  ;; (caplen at 12, flags at 28; FLAG_FILTERED_OUT = 2, FLAG_ELSEWHERE = 4),
  ;; then the packet, padded to 8 bytes.
  (func $fill (type $alloc) (param $L i32) (param $base i32) (param $count i32) (param $meta i32) (result i32)
    (local $n i32) (local $i i32) (local $rec i32) (local $caplen i32) (local $dst i32)
    (local.set $rec (local.get $base))
    (block $done
      (loop $record
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $caplen (i32.load offset=12 (local.get $rec)))
        (if (i32.eqz (i32.and (i32.load offset=28 (local.get $rec)) (i32.const 6)))  ;; FLAG_FILTERED_OUT | FLAG_ELSEWHERE
          (then
            (drop (call $lua_pushlstring (local.get $L) (i32.add (local.get $rec) (i32.const 40)) (local.get $caplen)))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (call $lua_rawseti (local.get $L) (i32.const -2) (i64.extend_i32_u (local.get $n)))
            ;; the header, 5 x 8 bytes
            (local.set $dst (i32.add (local.get $meta) (i32.mul (i32.sub (local.get $n) (i32.const 1)) (i32.const 40))))
            (i64.store (local.get $dst) (i64.load (local.get $rec)))
            (i64.store offset=8 (local.get $dst) (i64.load offset=8 (local.get $rec)))
            (i64.store offset=16 (local.get $dst) (i64.load offset=16 (local.get $rec)))
            (i64.store offset=24 (local.get $dst) (i64.load offset=24 (local.get $rec)))
            (i64.store offset=32 (local.get $dst) (i64.load offset=32 (local.get $rec)))))
        ;; the next record: HDR + caplen rounded up to 8
        (local.set $rec (i32.add (local.get $rec)
          (i32.and (i32.add (local.get $caplen) (i32.const 47)) (i32.const -8))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $record)))
    (local.get $n))

  ;; enter(L), a lua_CFunction: store lua_tothread(L, 1) (the coroutine
  ;; resumed, or NULL) at the address in $slot, where the watchdog reads
  ;; which Lua thread runs. When the budget counts in L now (setup, deinit,
  ;; a packet the watchdog armed: a count above 0), the coroutine gets L's
  ;; hook, mask and count, the budget's: one made in a lazy batch carries
  ;; count 0 and would run uncounted. Here, not in Lua, so that no function
  ;; a script can reach holds the hook or debug.sethook.
  (func $enter (type $cfunction) (param $L i32) (result i32)
    (local $co i32)
    (local.set $co (call $lua_tothread (local.get $L) (i32.const 1)))
    (if (global.get $slot)
      (then (i32.store (global.get $slot) (local.get $co))))
    (if (i32.and (i32.ne (local.get $co) (i32.const 0))
                 (i32.gt_s (call $lua_gethookcount (local.get $L)) (i32.const 0)))
      (then (call $lua_sethook (local.get $co) (call $lua_gethook (local.get $L))
                  (call $lua_gethookmask (local.get $L)) (call $lua_gethookcount (local.get $L)))))
    (i32.const 0))

  ;; ------------------------------------------------------------ stdout

  ;; out_write(L), a lua_CFunction: append its leading string arguments to
  ;; the buffer; returns (pushes) the index of the first other argument, or 0,
  ;; for Lua to write that one and the rest its own way.
  (func $out_write (type $cfunction) (param $L i32) (result i32)
    (local $n i32) (local $i i32)
    (local.set $n (call $lua_gettop (local.get $L)))
    (local.set $i (i32.const 1))
    (block $done
      (loop $arg
        (br_if $done (i32.gt_s (local.get $i) (local.get $n)))
        (br_if $done (i32.ne (call $lua_type (local.get $L) (local.get $i)) (i32.const 4)))  ;; LUA_TSTRING
        (call $append
          (call $lua_tolstring (local.get $L) (local.get $i) (global.get $scratch))
          (i32.load (global.get $scratch)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $arg)))
    (call $lua_pushinteger (local.get $L)
      (i64.extend_i32_u (select (i32.const 0) (local.get $i) (i32.gt_s (local.get $i) (local.get $n)))))
    (i32.const 1))

  ;; The bytes buffered live in the word just below the buffer, in memory
  ;; rather than a global: the capture thread reads it there (the memory is
  ;; shared) to write out what a worker it had to end still held, the output
  ;; of the packets before the one it was stuck on (src/vm/pool.ts end()).
  (func $outLen (result i32)
    (i32.load (i32.sub (global.get $out) (i32.const 4))))
  (func $setOutLen (param $n i32)
    (i32.store (i32.sub (global.get $out) (i32.const 4)) (local.get $n)))

  ;; out_pending(L), a lua_CFunction: pushes the number of bytes buffered.
  (func $out_pending (type $cfunction) (param $L i32) (result i32)
    (call $lua_pushinteger (local.get $L) (i64.extend_i32_u (call $outLen)))
    (i32.const 1))

  ;; out_flush(L), a lua_CFunction: hands the buffer to out_js and empties it.
  (func $out_flush (type $cfunction) (param $L i32) (result i32)
    (if (call $outLen)
      (then
        (call $out_js (global.get $out) (call $outLen))
        (call $setOutLen (i32.const 0))))
    (i32.const 0))

  ;; Buffer bytes [p, p + len). A piece that does not fit flushes the buffer;
  ;; one larger than the whole buffer goes straight out.
  (func $append (type $write) (param $p i32) (param $len i32)
    (if (i32.gt_u (local.get $len) (i32.sub (global.get $outCap) (call $outLen)))
      (then
        (if (call $outLen)
          (then
            (call $out_js (global.get $out) (call $outLen))
            (call $setOutLen (i32.const 0))))
        (if (i32.gt_u (local.get $len) (global.get $outCap))
          (then
            (call $out_js (local.get $p) (local.get $len))
            (return)))))
    (memory.copy (i32.add (global.get $out) (call $outLen)) (local.get $p) (local.get $len))
    (call $setOutLen (i32.add (call $outLen) (local.get $len))))

  ;; ------------------------------------------------------------ free lists

  ;; A block of class (n + 7) >> 3, n in 1 .. SMALL: the head of the class's
  ;; free list, or else the next class-size piece of the current chunk, or of
  ;; a new one; NULL when malloc has no new chunk.
  (func $take (type $cfunction) (param $n i32) (result i32)
    (local $head i32) (local $block i32)
    (if (local.tee $block (i32.load (local.tee $head
          (i32.add (global.get $heads)
            (i32.shl (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)) (i32.const 2))))))
      (then
        (i32.store (local.get $head) (i32.load (local.get $block)))
        (return (local.get $block))))
    ;; n rounded up to the class size
    (local.set $n (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (global.get $bump) (local.get $n)) (global.get $bumpEnd))
      (then
        (if (i32.eqz (local.tee $block (call $realloc (i32.const 0) (i32.const 262144))))  ;; CHUNK
          (then (return (i32.const 0))))
        (global.set $bump (local.get $block))
        (global.set $bumpEnd (i32.add (local.get $block) (i32.const 262144)))))
    (global.set $bump (i32.add (local.tee $block (global.get $bump)) (local.get $n)))
    (local.get $block))

  ;; Put a block recorded at `size` (1 .. SMALL) on its class's free list.
  (func $give (type $write) (param $block i32) (param $size i32)
    (local $head i32)
    (i32.store (local.get $block) (i32.load (local.tee $head
      (i32.add (global.get $heads)
        (i32.shl (i32.shr_u (i32.add (local.get $size) (i32.const 7)) (i32.const 3)) (i32.const 2))))))
    (i32.store (local.get $head) (local.get $block)))
)
