// Bundles riff's compiled modules (tsc's dist/src/**/*.js) into the few
// CommonJS files riff runs (npm run build:ts runs it after tsc and
// build-wasm):
//
//   dist/riff.cjs    the `riff` command: signals, the Lua workers spawned,
//                    then dist/cli.cjs
//   dist/boot.cjs    what the entry and the command line share, one instance
//                    of each: signals.ts, vm/prestart.ts, vm/wasm.ts
//   dist/cli.cjs     the command line (cli.ts and everything it loads)
//   dist/worker.cjs  a Lua worker thread (vm/worker.ts and its modules)
//
// Why: start-up. Node loads an ES module graph file by file (resolving,
// reading, linking some forty modules), and a worker with an ES module entry
// starts Node's ES module loader first: one CommonJS file a thread is
// measurably faster (README, Start-up). The entry is kept small because the
// workers are spawned from it: V8 parses a whole file before its first line
// runs (~15 ms for the command line's), and the workers' own start-up is the
// longest part of riff's.
//
// The modules keep finding their files (the Lua sources, the WebAssembly,
// package.json, the addon) where they are in dist/src: each one's
// `import.meta.url` becomes its own file's URL, computed from the bundle's
// __dirname. Packages in node_modules (yargs, the outputs' drivers) are
// loaded from there as before, not bundled; of wasmoon riff uses only its
// WebAssembly module (src/vm/wasm.ts), never its JS.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = path.join(ROOT, 'dist');
const SRC = path.join(DIST, 'src');
/** The modules dist/boot.cjs holds (as tsc emitted them). */
const SHARED = ['signals.js', 'vm/prestart.js', 'vm/wasm.js'].map((f) => path.join(SRC, f));

// Each module's import.meta.url, as the file it was: a function declaration
// in the footer (hoisted, so "use strict" stays the bundle's first line).
const FOOTER = "function __riffUrl(rel) { return require('node:url').pathToFileURL(require('node:path').join(__dirname, rel)).href; }";
const metaUrl: esbuild.Plugin = {
  name: 'riff-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, (args) => {
      if (!args.path.startsWith(SRC + path.sep)) return undefined;
      const rel = path.relative(DIST, args.path).split(path.sep).join('/');
      const src = fs.readFileSync(args.path, 'utf8').replaceAll('import.meta.url', `__riffUrl(${JSON.stringify(rel)})`);
      return { contents: src, loader: 'js' };
    });
  },
};

/** Imports of `files` (resolved paths) become requires of the bundle `to`. */
function externalTo(files: Map<string, string>): esbuild.Plugin {
  return {
    name: 'riff-external',
    setup(b) {
      b.onResolve({ filter: /^\.\.?\// }, (args) => {
        const target = files.get(path.resolve(args.resolveDir, args.path));
        return target ? { path: target, external: true } : undefined;
      });
    },
  };
}

const common: esbuild.BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Packages load from node_modules as they do unbundled.
  packages: 'external',
  footer: { js: FOOTER },
  // The entry spawns dist/worker.cjs, not tsc's worker.js (src/vm/prestart.ts).
  define: { RIFF_WORKER_BUNDLE: JSON.stringify('../../worker.cjs') },
  // import() of another bundle becomes require(): a real import() would
  // start Node's ES module loader, which is what bundling avoids.
  supported: { 'dynamic-import': false },
  logLevel: 'warning',
  legalComments: 'none',
};
const toBoot = new Map(SHARED.map((f) => [f, './boot.cjs']));

async function main(): Promise<void> {
  const started = performance.now();
  await Promise.all([
    esbuild.build({
      ...common,
      stdin: { contents: SHARED.map((f) => `export * from ${JSON.stringify('./' + path.relative(DIST, f))};`).join('\n'), resolveDir: DIST, loader: 'js' },
      outfile: path.join(DIST, 'boot.cjs'),
      plugins: [metaUrl],
    }),
    esbuild.build({
      ...common,
      entryPoints: [path.join(SRC, 'riff.js')],
      outfile: path.join(DIST, 'riff.cjs'),
      plugins: [externalTo(new Map([...toBoot, [path.join(SRC, 'cli.js'), './cli.cjs']])), metaUrl],
    }),
    esbuild.build({
      ...common,
      entryPoints: [path.join(SRC, 'cli.js')],
      outfile: path.join(DIST, 'cli.cjs'),
      plugins: [externalTo(toBoot), metaUrl],
    }),
    esbuild.build({
      ...common,
      entryPoints: [path.join(SRC, 'vm', 'worker.js')],
      outfile: path.join(DIST, 'worker.cjs'),
      plugins: [metaUrl],
    }),
  ]);
  // cli.cjs keeps cli.ts's #! line; only riff.cjs is run as a command.
  fs.chmodSync(path.join(DIST, 'riff.cjs'), 0o755);
  process.stderr.write(`bundle: dist/{riff,boot,cli,worker}.cjs in ${(performance.now() - started).toFixed(0)} ms\n`);
}

main().catch((e) => {
  process.stderr.write(`bundle: ${(e as Error).message}\n`);
  process.exit(1);
});
