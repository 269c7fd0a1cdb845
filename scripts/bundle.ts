// Bundles riff's compiled modules (tsc's dist/src/**/*.js) into the few
// CommonJS files riff runs (npm run build:ts runs it after tsc and
// build-wasm):
//
//   dist/riff.cjs    the `riff` command: signals, the Lua workers spawned,
//                    then dist/cli.cjs
//   dist/boot.cjs    what the entry and the command line share, one instance
//                    of each: signals.ts, vm/prestart.ts, vm/wasm.ts,
//                    bundle-cache.ts
//   dist/cli.cjs     the command line (cli.ts and everything it loads, yargs
//                    too; its message catalogues in dist/yargs-locales/)
//   dist/worker.cjs  a Lua worker thread (vm/worker.ts and its modules)
//
// Then riff runs once over fixtures/http.pcap to make the command line's
// code cache (dist/cli.cjs.cache), from which it is compiled at every start
// (src/bundle-cache.ts).
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
// __dirname. yargs is bundled into the command line's; of wasmoon riff uses
// only its WebAssembly module (src/vm/wasm.ts), never its JS; the other
// packages (the outputs' drivers) are loaded from node_modules as before,
// when an output needs them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, spawnSync } from 'node:child_process';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = path.join(ROOT, 'dist');
const SRC = path.join(DIST, 'src');
/** The modules dist/boot.cjs holds (as tsc emitted them). */
const SHARED = ['signals.js', 'vm/prestart.js', 'vm/wasm.js', 'vm/wasm-cache.js', 'bundle-cache.js'].map((f) => path.join(SRC, f));

// Each module's import.meta.url, as the file it was: a function declaration
// in the footer (hoisted, so "use strict" stays the bundle's first line).
const FOOTER = "function __riffUrl(rel) { return require('node:url').pathToFileURL(require('node:path').join(__dirname, rel)).href; }";
const withMetaUrl = (file: string, src: string): string =>
  src.replaceAll('import.meta.url', `__riffUrl(${JSON.stringify(path.relative(DIST, file).split(path.sep).join('/'))})`);
const metaUrl: esbuild.Plugin = {
  name: 'riff-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, (args) => {
      if (!args.path.startsWith(SRC + path.sep)) return undefined;
      return { contents: withMetaUrl(args.path, fs.readFileSync(args.path, 'utf8')), loader: 'js' };
    });
  },
};

/** `src` with each of `calls` (expected exactly once) replaced by its `to`. */
function replaceOnce(file: string, src: string, calls: [string, string][]): string {
  for (const [from, to] of calls) {
    if (src.split(from).length !== 2) throw new Error(`${file}: expected ${from} once`);
    src = src.replace(from, to);
  }
  return src;
}

/**
 * yargs and the packages it requires go into the command line's bundle:
 * loaded from node_modules they were ~30 ms of the capture thread's CPU at
 * every start (Node resolving each package's \`exports\` map, then reading and
 * compiling some twenty files one by one), in the window where the workers
 * boot on the same two cores (README, Start-up). args.ts requires yargs's
 * CommonJS build through createRequire, which esbuild does not follow: those
 * calls become the bundle's own require. yargs finds its message catalogues
 * (locales/*.json, read through y18n when a message is printed) beside its
 * build, from __dirname, which in the bundle is dist/: the catalogues of the
 * yargs bundled are copied to dist/yargs-locales/ with it, and it reads them
 * there (resolving yargs's directory at run time instead cost the capture
 * thread up to 5 ms: the first package resolution warms up Node's resolver).
 * Two of its loads are put off until used: node:assert (~5 ms), loaded only
 * if one of yargs's internal assertions fails (see LAZY_ASSERT), and
 * process.stdout.
 */
const YARGS_BUILD = /[\\/]node_modules[\\/]yargs[\\/]build[\\/]index\.cjs$/;
const YARGS_LOCALES = 'yargs-locales';
/**
 * yargs's CommonJS build takes exactly notStrictEqual and strictEqual from
 * node:assert, as sanity checks of its own state (its platform shim). Both
 * compare with Object.is, as here; when one fails, node:assert's own
 * function throws its own error.
 */
const LAZY_ASSERT = `
exports.notStrictEqual = (a, b, message) => { if (Object.is(a, b)) require('node:assert').notStrictEqual(a, b, message); };
exports.strictEqual = (a, b, message) => { if (!Object.is(a, b)) require('node:assert').strictEqual(a, b, message); };
`;
const bundleYargs: esbuild.Plugin = {
  name: 'riff-yargs',
  setup(b) {
    b.onLoad({ filter: /[\\/]cli[\\/]args\.js$/ }, (args) => {
      const src = replaceOnce(args.path, fs.readFileSync(args.path, 'utf8'), [
        ["requireCjs('yargs/yargs')", "require('yargs/yargs')"],
        ["requireCjs('yargs/helpers')", "require('yargs/helpers')"],
      ]);
      return { contents: withMetaUrl(args.path, src), loader: 'js' };
    });
    b.onLoad({ filter: YARGS_BUILD }, (args) => {
      const locales = path.join(path.dirname(args.path), '..', 'locales');
      const to = path.join(DIST, YARGS_LOCALES);
      fs.rmSync(to, { recursive: true, force: true });
      fs.cpSync(locales, to, { recursive: true });
      if (!fs.existsSync(path.join(to, 'en.json'))) throw new Error(`${locales}: no en.json; where are yargs's locales?`);
      const src = replaceOnce(args.path, fs.readFileSync(args.path, 'utf8'), [
        ['(__dirname,"../locales")', `(__dirname,${JSON.stringify(YARGS_LOCALES)})`],
        ['require("assert")', 'require("riff:lazy-assert")'],
        // The terminal's width, read when yargs wraps its help (never: riff
        // sets the width), not as it loads: process.stdout created only for
        // it would load Node's net module for a pipe (see terminal() in
        // src/outputs/fd-sink.ts).
        [
          'stdColumns:void 0!==process.stdout.columns?process.stdout.columns:null',
          'get stdColumns(){return void 0!==process.stdout.columns?process.stdout.columns:null}',
        ],
      ]);
      return { contents: src, loader: 'js' };
    });
    b.onResolve({ filter: /^riff:lazy-assert$/ }, () => ({ path: 'lazy-assert', namespace: 'riff' }));
    b.onLoad({ filter: /^lazy-assert$/, namespace: 'riff' }, () => ({ contents: LAZY_ASSERT, loader: 'js' }));
    // riff's own imports of packages stay requires of node_modules (the
    // outputs' drivers, loaded only when an output is opened), except yargs;
    // what yargs's packages require is bundled with them.
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path === 'yargs' || args.path.startsWith('yargs/')) return undefined;
      if (args.importer.split(path.sep).includes('node_modules')) return undefined;
      return { path: args.path, external: true };
    });
  },
};

/**
 * esbuild's `__toESM`, which gives `import fs from 'node:fs'` its module in a
 * CommonJS bundle, copies every property of the module onto a new object as
 * a getter: ~100 closures and defineProperty calls for node:fs, and the
 * bundles import node:fs, node:path and others that way 39 times. Measured
 * in a fresh process, boot.cjs spent 2 of its 3 ms there, on the path of
 * both the capture thread and every worker. Here the module is the new
 * object's prototype instead: the same names read the same values (live,
 * as the getters were), in one call. Checked against esbuild's helper text,
 * so a new esbuild that writes it otherwise fails the build, not riff.
 */
function lightInterop(file: string): void {
  const src = fs.readFileSync(file, 'utf8');
  const at = src.indexOf('var __toESM = (mod, isNodeMode, target) => (');
  if (at < 0) return; // this bundle imports nothing that way
  const end = src.indexOf('\n));\n', at);
  const helper = src.slice(at, end + 5);
  if (end < 0 || !helper.includes('__copyProps(') || !helper.includes('isNodeMode || !mod || !mod.__esModule ? __defProp(target, "default", { value: mod, enumerable: true }) : target'))
    throw new Error(`${file}: esbuild's __toESM is not the one scripts/bundle.ts lightInterop replaces; look at it again`);
  const light =
    'var __toESM = (mod, isNodeMode) => mod == null ? { default: mod } : ' +
    'Object.create(mod, isNodeMode || !mod.__esModule ? { default: { value: mod, enumerable: true } } : {});';
  fs.writeFileSync(file, src.slice(0, at) + light + '\n' + src.slice(end + 5));
}

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
  // The entry spawns dist/worker.cjs, not tsc's worker.js
  // (src/vm/prestart.ts), and runs cli.cjs from its cache (src/riff.ts).
  define: { RIFF_WORKER_BUNDLE: JSON.stringify('../../worker.cjs'), RIFF_BUNDLED: 'true' },
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
      packages: undefined,
      plugins: [externalTo(toBoot), bundleYargs, metaUrl],
    }),
    esbuild.build({
      ...common,
      entryPoints: [path.join(SRC, 'vm', 'worker.js')],
      outfile: path.join(DIST, 'worker.cjs'),
      plugins: [metaUrl],
    }),
  ]);
  for (const b of ['riff', 'boot', 'cli', 'worker']) lightInterop(path.join(DIST, `${b}.cjs`));
  // cli.cjs keeps cli.ts's #! line; only riff.cjs is run as a command.
  fs.chmodSync(path.join(DIST, 'riff.cjs'), 0o755);
  const cached = makeCodeCache();
  const trained = await makeWasmCache();
  const made = [cached && 'the code cache of cli.cjs', trained && `the Lua module's (${(trained / 1024).toFixed(0)} KB)`].filter(Boolean);
  process.stderr.write(`bundle: dist/{riff,boot,cli,worker}.cjs${made.length ? ' and ' + made.join(' and ') : ''} in ${(performance.now() - started).toFixed(0)} ms\n`);
}

/**
 * The environment of the build's riff runs: without NODE_OPTIONS (a V8 flag
 * there, e.g. --max-old-space-size, would be in the flags a cache records,
 * and riff started without it would refuse the cache) nor riff's knobs on
 * how the Lua module is compiled (they turn the module's cache off).
 */
const PLAIN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS' && !k.startsWith('RIFF_')));

/** The longest any of the build's riff runs may take (the training run takes ~3 s): past it the run is killed and the build goes on without that cache. */
const RUN_LIMIT_MS = 180_000;
/** spawnSync's options for that limit. */
const LIMITED = { timeout: RUN_LIMIT_MS, killSignal: 'SIGKILL' } as const;

/**
 * The command line's code cache: riff run over the bundled capture with the
 * bundled pipeline, in the mode where it sets no V8 flag and saves the cache
 * at its end (src/bundle-cache.ts). Without it riff runs as well, compiling
 * from source; the build says so, and test/startup checks it is made and
 * taken.
 */
function makeCodeCache(): boolean {
  const cache = path.join(DIST, 'cli.cjs.cache');
  fs.rmSync(cache, { force: true });
  const run = spawnSync(process.execPath, [path.join(DIST, 'riff.cjs'), '-q', '-r', path.join(ROOT, 'fixtures', 'http.pcap')], {
    env: { ...PLAIN_ENV, RIFF_CODE_CACHE: 'make' },
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
    ...LIMITED,
  });
  if (run.status === 0 && fs.existsSync(cache)) return true;
  fs.rmSync(cache, { force: true });
  const why = run.error ? `it took longer than ${RUN_LIMIT_MS / 1000} s or did not start: ${run.error.message}` : `riff exited ${run.status ?? run.signal}: ${(run.stderr ?? '').trim().split('\n').pop()}`;
  process.stderr.write(`bundle: warning: no code cache for cli.cjs (${why}); riff starts slower\n`);
  return false;
}

const TRAIN_SLICES = 30;
const TRAIN_SLICE_MS = 50;
/**
 * riff's training run over `capture`, fed through a pipe in TRAIN_SLICES
 * slices, TRAIN_SLICE_MS apart (packets come while it runs, as they do
 * live), with a reload (SIGHUP) after every third, each waited for: a
 * reload swaps VMs only between the packets riff has been given, and a
 * file read at once is in the ring whole before the first reload takes.
 * Resolves to how it ended, its stderr and how many reloads took effect.
 */
async function train(capture: string): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string; reloads: number; timedOut: boolean }> {
  // --verbose: its "script:" line says the run is up (a SIGHUP before Node
  // has started riff would end it).
  const child = spawn(process.execPath, [path.join(DIST, 'riff.cjs'), '-q', '--verbose', '-r', '-', '--lua', path.join(ROOT, 'scripts', 'train.lua')], {
    env: { ...PLAIN_ENV, RIFF_WASM_CACHE: 'make' },
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  let heard: () => void = () => {};
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
    heard();
  });
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.on('close', (status, signal) => resolve([status, signal]));
    // Not started at all (e.g. EAGAIN): warned of as a run that failed.
    child.on('error', (e) => {
      stderr += `riff: ${e.message}\n`;
      resolve([null, null]);
    });
  });
  let over = false;
  let timedOut = false;
  const limit = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, RUN_LIMIT_MS);
  void closed.then(() => {
    over = true;
    clearTimeout(limit);
    heard();
  });
  /** Until riff has said what `test` looks for (or has ended, or `ms` passed). */
  const until = async (test: () => boolean, ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (!test() && !over && Date.now() < end) await new Promise<void>((resolve) => ((heard = resolve), setTimeout(resolve, 100)));
    return test();
  };
  const reloads = () => Number([...stderr.matchAll(/\(reload (\d+)\)/g)].pop()?.[1] ?? 0);
  child.stdin!.on('error', () => {}); // riff gone early: its exit status says why
  const bytes = fs.readFileSync(capture);
  const slice = Math.ceil(bytes.length / TRAIN_SLICES);
  for (let i = 0; i < TRAIN_SLICES && !over; i++) {
    child.stdin!.write(bytes.subarray(i * slice, (i + 1) * slice));
    if (i === 0 && !(await until(() => /^riff: script: /m.test(stderr), 30_000))) break;
    if (i % 3 === 2) {
      const before = reloads();
      child.kill('SIGHUP');
      await until(() => reloads() > before, 10_000);
    } else await new Promise((resolve) => setTimeout(resolve, TRAIN_SLICE_MS));
  }
  child.stdin!.end();
  const [status, signal] = await closed;
  return { status, signal, stderr, reloads: reloads(), timedOut };
}

/**
 * The Lua module's code cache (src/vm/wasm-cache.ts): riff's training run,
 * scripts/train.lua (the plugins riff ships) over a generated web capture of
 * 20,000 packets, saving the module's code at its end. Then a fresh node
 * must take it, as riff's start does (V8's flags at their defaults): else it
 * is removed and the build says so. Without it riff runs as well, compiling
 * the module at every start. Returns the cache's size, 0 when none.
 */
async function makeWasmCache(): Promise<number> {
  const cache = path.join(SRC, 'vm', 'wasm', 'lua.wasm.cache');
  fs.rmSync(cache, { force: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-train-'));
  const warn = (why: string) => {
    fs.rmSync(cache, { force: true });
    process.stderr.write(`bundle: warning: no code cache for the Lua module (${why}); riff compiles it at every start\n`);
    return 0;
  };
  try {
    const capture = path.join(tmp, 'train.pcap');
    const gen = spawnSync(process.execPath, [path.join(DIST, 'scripts', 'gen-bench-capture.js'), capture, '--packets', '20000', '--dns-rate', '0.1'], { env: PLAIN_ENV, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (gen.status !== 0) return warn(`the training capture was not generated: exit ${gen.status ?? gen.signal}`);
    const run = await train(capture);
    if (run.timedOut) return warn(`the training run took longer than ${RUN_LIMIT_MS / 1000} s and was ended`);
    if (run.status !== 0 || !fs.existsSync(cache)) return warn(`the training run exited ${run.status ?? run.signal}: ${run.stderr.trim().split('\n').find((l) => l.startsWith('riff: ')) ?? ''}`);
    if (run.reloads < 2) return warn(`the training run reloaded ${run.reloads} times, not at least twice`);
    const check = spawnSync(process.execPath, ['-e', `const b = require(${JSON.stringify(path.join(DIST, 'boot.cjs'))}); b.openSerializer(); process.stdout.write(String(!!b.cachedLua()))`], { env: PLAIN_ENV, encoding: 'utf8', ...LIMITED });
    if (check.stdout !== 'true') return warn(`a fresh node refused it: exit ${check.status ?? check.signal}`);
    return fs.statSync(cache).size;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bundle: ${(e as Error).message}\n`);
  process.exit(1);
});
