// Assembles riff's WebAssembly sources (src/vm/wasm/*.wat) with wabt, at
// build time (npm run build:ts runs it after tsc), so riff's start-up only
// reads the result:
//
//   bridge.wat  ->  dist/src/vm/wasm/bridge.wasm   a module, instantiated per
//                                                  Lua VM (src/vm/bridge.ts)
//   host.wat    ->  dist/src/vm/wasm/host.wasm     a JS function as a Lua C
//                                                  function (bridge.ts
//                                                  hostFunction)
//   string.wat  ->  dist/src/vm/wasm/string.json   function bodies that
//                                                  src/vm/wasm.ts splices into
//                                                  wasmoon's module
//   wasmoon's glue.wasm + string.json
//               ->  dist/src/vm/wasm/lua.wasm      the Lua module as riff runs
//                   dist/src/vm/wasm/lua.json      it (patchModule's output)
//                                                  and what was patched
//
// A spliced body keeps its calls open: the module is assembled relocatable,
// and each call's function index (a 5-byte LEB128 there) is listed by its
// offset in the body and the callee's name (an import's field, or the export
// name of a function defined beside it), for patchModule to fill in with the
// index the callee has in wasmoon's module.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import wabt from 'wabt';
import { GLUE_WASM, patched, patchModule, readUleb, VALTYPE, type Prebuilt, type Spliced } from '../src/vm/wasm.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = path.join(ROOT, 'src', 'vm', 'wasm');
const OUT = path.join(ROOT, 'dist', 'src', 'vm', 'wasm');
// Shared memory (threads), SIMD, memory.copy (bulk memory): all in Node 20.
const FEATURES = { threads: true, simd: true, bulk_memory: true };

/** The sections of a module, and a reader positioned anywhere in it. */
function sections(b: Uint8Array) {
  let p = 8;
  const r = {
    at: () => p,
    seek: (to: number) => void (p = to),
    u: () => {
      const [v, next] = readUleb(b, p);
      p = next;
      return v;
    },
    byte: () => b[p++],
    name: () => {
      const n = r.u();
      p += n;
      return Buffer.from(b.subarray(p - n, p)).toString('utf8');
    },
    list: [] as { id: number; name: string; start: number; end: number }[],
  };
  while (p < b.length) {
    const id = r.byte();
    const len = r.u();
    const end = p + len;
    const name = id === 0 ? r.name() : '';
    r.list.push({ id, name, start: p, end });
    p = end;
  }
  return r;
}

/** The exported functions of a relocatable module, as patchModule splices them. */
function splices(b: Uint8Array): Record<string, Spliced> {
  const s = sections(b);
  const sec = (id: number, name = '') => s.list.find((x) => x.id === id && x.name === name);
  const types: string[] = [];
  const imports: string[] = []; // imported functions' field names, by index
  const decls: number[] = []; // defined functions' type indices
  const exported = new Map<number, string>();
  const bodies: { start: number; end: number }[] = [];
  const symbols: number[] = []; // symbol -> function index (function symbols only)
  const vec = (id: number, each: () => void, name = '') => {
    const x = sec(id, name);
    if (!x) return;
    s.seek(x.start);
    for (let n = s.u(); n > 0; n--) each();
  };
  vec(1, () => {
    if (s.byte() !== 0x60) throw new Error('not a function type');
    const list = () => Array.from({ length: s.u() }, () => VALTYPE[s.byte()]).join(' ');
    const params = list();
    types.push(`${params} -> ${list()}`);
  });
  vec(2, () => {
    s.name();
    const field = s.name();
    const kind = s.byte();
    if (kind === 0) {
      imports.push(field);
      s.u(); // its type
    } else if (kind === 2) {
      const flags = s.u(); // the memory's limits: min, and max when flagged
      s.u();
      if (flags & 1) s.u();
    } else {
      throw new Error(`import ${field}: only functions and the memory are expected`);
    }
  });
  vec(3, () => decls.push(s.u()));
  vec(7, () => {
    const name = s.name();
    const kind = s.byte();
    const index = s.u();
    if (kind === 0) exported.set(index, name);
  });
  const code = sec(10)!;
  vec(10, () => {
    const size = s.u();
    bodies.push({ start: s.at(), end: s.at() + size });
    s.seek(s.at() + size);
  });
  // linking: version, then subsections; the symbol table is subsection 8.
  const linking = sec(0, 'linking')!;
  s.seek(linking.start);
  s.u();
  while (s.at() < linking.end) {
    const kind = s.byte();
    const end = s.u() + s.at();
    if (kind === 8) {
      for (let n = s.u(); n > 0; n--) {
        const symKind = s.byte();
        const flags = s.u();
        if (symKind !== 0) throw new Error('only function symbols are expected');
        symbols.push(s.u());
        // A name follows unless the symbol is an import (UNDEFINED) without EXPLICIT_NAME.
        if (!(flags & 0x10) || flags & 0x40) s.name();
      }
    }
    s.seek(end);
  }
  const nameOf = (f: number) => (f < imports.length ? imports[f] : exported.get(f) ?? `#${f}`);
  const out: Record<string, Spliced> = {};
  const calls = new Map<number, [number, string][]>();
  const relocs = s.list.find((x) => x.id === 0 && x.name.startsWith('reloc.'));
  if (relocs) {
    s.seek(relocs.start);
    s.u(); // the section they apply to: code
    for (let n = s.u(); n > 0; n--) {
      const type = s.byte();
      const offset = code.start + s.u();
      const symbol = s.u();
      if (type !== 0) throw new Error(`relocation type ${type}: only calls (R_WASM_FUNCTION_INDEX_LEB) are expected`);
      const f = bodies.findIndex((x) => x.start <= offset && offset < x.end);
      // patchModule replaces five bytes: a padded LEB128, as relocatable output writes it.
      if (f < 0 || ![0, 1, 2, 3].every((k) => b[offset + k] & 0x80) || b[offset + 4] & 0x80) {
        throw new Error(`a call at ${offset} is not a five-byte function index inside a function`);
      }
      const list = calls.get(f) ?? [];
      list.push([offset - bodies[f].start, nameOf(symbols[symbol])]);
      calls.set(f, list);
    }
  }
  bodies.forEach((x, i) => {
    const name = exported.get(imports.length + i);
    if (!name) throw new Error(`function ${imports.length + i} is not exported: patchModule would not know it`);
    out[name] = { sig: types[decls[i]], body: Buffer.from(b.subarray(x.start, x.end)).toString('hex'), calls: calls.get(i) ?? [] };
  });
  return out;
}

async function main() {
  const w = await wabt();
  fs.mkdirSync(OUT, { recursive: true });
  const assemble = (file: string, relocatable: boolean) => {
    const m = w.parseWat(file, fs.readFileSync(path.join(SRC, file), 'utf8'), FEATURES);
    try {
      m.resolveNames();
      // wabt.js's validate takes the features too (its typings omit them):
      // without them shared memory is refused.
      (m as unknown as { validate(f: typeof FEATURES): void }).validate(FEATURES);
      return m.toBinary({ relocatable }).buffer;
    } finally {
      m.destroy();
    }
  };
  fs.writeFileSync(path.join(OUT, 'bridge.wasm'), assemble('bridge.wat', false));
  fs.writeFileSync(path.join(OUT, 'host.wasm'), assemble('host.wat', false));
  const spliced = splices(assemble('string.wat', true));
  fs.writeFileSync(path.join(OUT, 'string.json'), JSON.stringify(spliced, null, 1) + '\n');
  // The patched module, so that a run reads it instead of patching
  // wasmoon's at every start; lua.json names the wasmoon it was made from
  // (src/vm/wasm.ts luaModuleBytes patches at run time when that changed).
  const glue = GLUE_WASM();
  const lua = patchModule(fs.readFileSync(glue), spliced);
  const made: Prebuilt = {
    wasmoon: JSON.parse(fs.readFileSync(path.join(path.dirname(glue), '..', 'package.json'), 'utf8')).version,
    size: fs.statSync(glue).size,
    ...patched,
  };
  fs.writeFileSync(path.join(OUT, 'lua.wasm'), lua);
  fs.writeFileSync(path.join(OUT, 'lua.json'), JSON.stringify(made) + '\n');
}

main().catch((e: Error) => {
  process.stderr.write(`riff build: ${e.message}\n`);
  process.exit(1);
});
