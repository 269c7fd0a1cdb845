// riff's allocator (src/vm/wasm/bridge.wat), held to its contract directly:
// a bridge linked to a fresh wasmoon instance with no Lua state, so every
// allocation is the test's own. The Lua-level tests in vm.test.ts drive it
// through real strings and tables; these pin the size classes and their
// edges, which a Lua program only reaches by chance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkBridge, SIZE_CLASSES, type Bridge } from '../src/vm/bridge.js';
import type { Wasm } from '../src/vm/wasm.js';
import { loadWasm } from '../src/vm/vm.js';

const SMALL = (SIZE_CLASSES - 1) * 8;
const GUARD = 8; // words watched past the heads
const classOf = (n: number) => (n + 7) >> 3;

async function bridge() {
  const w: Wasm = await loadWasm();
  const x = w.x;
  /** The blocks the allocator said it refuses to grow (0: a fresh one). */
  const told: number[] = [];
  const b: Bridge = linkBridge({
    memory: w.memory,
    realloc: x.realloc,
    free: x.free,
    lua_pushlstring: x.lua_pushlstring,
    lua_rawseti: x.lua_rawseti,
    lua_tothread: x.lua_tothread,
    lua_gettop: x.lua_gettop,
    lua_type: x.lua_type,
    lua_tolstring: x.lua_tolstring,
    lua_pushinteger: x.lua_pushinteger,
    lua_gethook: x.lua_gethook,
    lua_gethookmask: x.lua_gethookmask,
    lua_gethookcount: x.lua_gethookcount,
    lua_sethook: x.lua_sethook,
    out_js: () => {},
    refused: (ptr) => void told.push(ptr),
  });
  const words = SIZE_CLASSES + GUARD;
  const heads = x.malloc(words * 4);
  w.heap().fill(0, heads, heads + words * 4);
  b.heads.value = heads;
  const view = () => new DataView(w.memory.buffer);
  const head = (c: number) => view().getUint32(heads + 4 * c, true);
  const guard = () => Array.from({ length: GUARD }, (_, i) => head(SIZE_CLASSES + i));
  /** lua_Alloc as Lua calls it: a fresh block gets a type tag (here 4, a string) as osize. */
  const alloc = (ptr: number, osize: number, nsize: number) => b.alloc(0, ptr, ptr ? osize : 4, nsize) >>> 0;
  const fill = (p: number, n: number, v: number) => w.heap().fill(v, p, p + n);
  const holds = (p: number, n: number, v: number) => w.heap().subarray(p, p + n).every((x) => x === v);
  return { b, w, head, guard, alloc, fill, holds, told, used: () => b.used.value >>> 0 };
}

test("the allocator's size classes: a freed block of up to 2048 bytes is taken again by the same 8-byte class only, larger ones are malloc's", async () => {
  const { head, guard, alloc } = await bridge();
  assert.equal(SMALL, 2048);
  const sizes = [1, 7, 8, 9, 16, 17, 100, 2040, 2041, 2047, 2048];
  for (const n of sizes) {
    const p = alloc(0, 0, n);
    assert.ok(p && p % 8 === 0, `a block of ${n} is 8-aligned`);
    alloc(p, n, 0);
    assert.equal(head(classOf(n)), p, `a freed block of ${n} heads class ${classOf(n)}'s list`);
    for (const m of sizes) {
      const q = alloc(0, 0, m);
      assert.equal(q === p, classOf(m) === classOf(n), `after freeing ${n}, a block of ${m} ${classOf(m) === classOf(n) ? 'reuses' : 'does not reuse'} it`);
      alloc(q, m, 0);
      if (q !== p) {
        // put p back on top of its list for the next m
        const again = alloc(0, 0, n);
        assert.equal(again, p);
        alloc(again, n, 0);
      }
    }
  }
  // Past the edge: malloc and free, no free list touched, nothing written past the heads.
  const before = Array.from({ length: SIZE_CLASSES }, (_, c) => head(c));
  const g = guard();
  for (const n of [2049, 2056, 4096, 100_000]) {
    const p = alloc(0, 0, n);
    assert.ok(p);
    alloc(p, n, 0);
  }
  assert.deepEqual(
    Array.from({ length: SIZE_CLASSES }, (_, c) => head(c)),
    before,
    'blocks above 2048 bytes never reach the free lists',
  );
  assert.deepEqual(guard(), g, 'nothing written past SIZE_CLASSES heads');
  assert.deepEqual(guard(), new Array(GUARD).fill(0));
});

test('the allocator resizes in place within a class and moves across classes and to malloc with the bytes kept', async () => {
  const { head, guard, alloc, fill, holds } = await bridge();
  // Growing within the class: in place.
  const p = alloc(0, 0, 10);
  fill(p, 10, 0xaa);
  assert.equal(alloc(p, 10, 16), p);
  // Growing past the class: a new block, the bytes copied, the old one on its list.
  const q = alloc(p, 16, 17);
  assert.notEqual(q, p);
  assert.ok(holds(q, 10, 0xaa));
  assert.equal(head(classOf(16)), p);
  // Growing out of the free lists at the edge: 2048 -> 2049 goes to malloc.
  const r = alloc(0, 0, 2048);
  fill(r, 2048, 0x5c);
  const s = alloc(r, 2048, 2049);
  assert.notEqual(s, r);
  assert.ok(holds(s, 2048, 0x5c));
  assert.equal(head(classOf(2048)), r);
  // A malloc block grows with realloc, keeping its bytes.
  fill(s, 2049, 0x3d);
  const t = alloc(s, 2049, 50_000);
  assert.ok(t && holds(t, 2049, 0x3d));
  // Shrinking from malloc to a small size: a block of that class, the bytes
  // kept, the malloc block freed (never put on a list).
  const t2 = alloc(t, 50_000, 100);
  assert.notEqual(t2, t);
  assert.ok(holds(t2, 100, 0x3d));
  alloc(t2, 100, 0);
  assert.equal(head(classOf(100)), t2);
  // Shrinking within a class: in place.
  const u = alloc(0, 0, 2000);
  fill(u, 2000, 0x71);
  assert.equal(alloc(u, 2000, 1995), u);
  // Shrinking to a smaller class: a block of that class, the bytes kept, the
  // old one back on its own class's list (not the smaller one's).
  const v = alloc(u, 1995, 9);
  assert.notEqual(v, u);
  assert.ok(holds(v, 9, 0x71));
  assert.equal(head(classOf(2000)), u);
  assert.deepEqual(guard(), new Array(8).fill(0));
});

test('a block grown and shrunk over and over reuses the same blocks: memory does not creep into the smaller class', async () => {
  const { head, alloc } = await bridge();
  // What a coroutine's stack does: shrunk at a collection, grown again by the next packet.
  const seen = new Set<number>();
  let p = alloc(0, 0, 1600);
  for (let i = 0; i < 10_000; i++) {
    p = alloc(p, 1600, 160);
    seen.add(p);
    p = alloc(p, 160, 1600);
    seen.add(p);
  }
  alloc(p, 1600, 0);
  // One block of each class, taken and given back in turn.
  assert.ok(seen.size <= 3, `${seen.size} blocks used`);
  assert.ok(head(classOf(1600)) && head(classOf(160)));
});

test('the allocator counts what Lua holds and refuses growth past the cap, in 64 bits, telling JS of each refusal first', async () => {
  const { b, alloc, used, told } = await bridge();
  const at = used();
  const p = alloc(0, 0, 100);
  assert.equal(used(), at + 100, 'a fresh block counts its size, not the type tag');
  const q0 = alloc(p, 100, 3000);
  assert.equal(used(), at + 3000);
  let q = alloc(q0, 3000, 40);
  assert.ok(q);
  assert.equal(used(), at + 40);
  b.limit.value = at + 100;
  assert.equal(alloc(0, 0, 61), 0, 'past the cap: NULL');
  assert.equal(used(), at + 40, 'a refusal counts nothing');
  const r = alloc(0, 0, 60);
  assert.ok(r, 'up to the cap: granted');
  assert.equal(used(), at + 100);
  assert.equal(alloc(q, 40, 41), 0, 'growth past the cap: NULL, the block left as it was');
  assert.deepEqual(told, [0, q], 'each refusal was told, with the block it would have grown');
  const refusedBlock = q;
  q = alloc(q, 40, 8);
  assert.ok(q, 'shrinking is always granted');
  assert.equal(used(), at + 68);
  alloc(q, 8, 0);
  alloc(r, 60, 0);
  assert.equal(used(), at);
  // used + delta past 4 GiB must not wrap around to pass a cap near the top.
  b.used.value = 0xffff_ff00 | 0;
  b.limit.value = 0xffff_fff0 | 0;
  assert.equal(alloc(0, 0, 0x200), 0);
  b.limit.value = 0;
  const s = alloc(0, 0, 0x200);
  assert.ok(s, 'no cap: granted');
  assert.deepEqual(told, [0, refusedBlock, 0], 'grants are not told');
  alloc(s, 0x200, 0);
  assert.equal(used(), 0xffff_ff00);
});
