// No import circles under src/: a module and what it imports must read one
// way, so the way of a packet (capture -> vm -> outputs) stays followable and
// module initialisation order never matters. Parses the import and export-from
// statements of the TypeScript sources (type-only imports count too: a circle
// of types is still a circle to a reader).
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = process.env.RIFF_IMPORTS_SRC ?? path.join(ROOT, 'src');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The src/ modules a file imports (static imports, export-from, and import() of a literal). */
export function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const specs = new Set<string>();
  const patterns = [/\b(?:import|export)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g];
  for (const re of patterns) for (const m of text.matchAll(re)) specs.add(m[1]);
  const out: string[] = [];
  for (const s of specs) {
    if (!s.startsWith('.')) continue;
    const target = path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts'));
    if (fs.existsSync(target)) out.push(target);
  }
  return out;
}

/** Every circle in the graph, each once, as a list of files (first repeated at the end). */
export function circles(files: string[]): string[][] {
  const graph = new Map(files.map((f) => [f, importsOf(f)]));
  const found = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      if (state.get(g) === 'open') {
        const cycle = stack.slice(stack.indexOf(g));
        // The same circle entered at another module is one circle.
        const key = [...cycle].sort().join('|');
        if (!found.has(key)) found.set(key, [...cycle, g]);
      } else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of [...graph.keys()].sort()) if (!state.has(f)) visit(f);
  return [...found.values()];
}

test('no import circles under src/', () => {
  const files = sources(SRC);
  assert.ok(files.length > 20, `found only ${files.length} modules under ${SRC}`);
  // The parser sees the imports riff is known to have (a parser that finds nothing finds no circle).
  const cli = importsOf(path.join(SRC, 'cli.ts')).map((f) => path.relative(SRC, f));
  assert.ok(cli.includes(path.join('vm', 'pool.ts')), `cli.ts's imports as parsed: ${cli.join(', ')}`);
  const found = circles(files).map((c) => c.map((f) => path.relative(SRC, f)).join(' -> '));
  assert.deepEqual(found, [], `import circles:\n${found.join('\n')}`);
});

test('the circle finder finds a circle', () => {
  const dir = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), 'riff-imports-'));
  try {
    fs.writeFileSync(path.join(dir, 'a.ts'), "import { b } from './b.js';\nexport const a = 1;\n");
    fs.writeFileSync(path.join(dir, 'b.ts'), "import type { C } from './c.js';\nexport const b = 2;\n");
    fs.writeFileSync(path.join(dir, 'c.ts'), "export { a } from './a.js';\nexport type C = number;\n");
    fs.writeFileSync(path.join(dir, 'd.ts'), "// import { a } from './a.js';\nexport const d = 0;\n");
    const found = circles(sources(dir)).map((c) => c.map((f) => path.basename(f)).join(' -> '));
    assert.deepEqual(found, ['a.ts -> b.ts -> c.ts -> a.ts']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
