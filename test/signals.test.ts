// Ctrl-C, SIGTERM and closed pipes: riff stops capturing, runs deinit,
// flushes stdout and the -w file, prints its summary and exits 0; a second
// Ctrl-C leaves at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Batch } from '../src/capture/batch.js';
import { openCaptureFile } from '../src/capture/file.js';
import { riffAsync, tree, tmpdir, FIXTURES, pcapHeader, CLI } from './helpers.js';

const SLOW = `
function setup() io.stderr:write("ready\\n") end
buffer = function(p)
  -- 20 ms of CPU a packet, however fast the code V8 runs it in (a count of
  -- loop turns ran through 45 packets before the signal once the Lua
  -- module came optimized from the build).
  local t = os.clock()
  while os.clock() - t < 0.02 do end
  io.write("packet ", riff.packet.id, "\\n")
end
function deinit() print("deinit ran") end`;

async function until(pred: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function countPackets(file: string): number {
  const f = openCaptureFile(file);
  const b = new Batch();
  let n = 0;
  for (let got; (got = f.fill(b, 100)); b.reset()) n += got;
  f.close();
  return n;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  test(`${sig} while reading a file: deinit runs, -w stays a valid pcap, summary, exit 0`, async () => {
    const dir = tree({ 'slow.lua': SLOW });
    const out = path.join(tmpdir(), 'partial.pcap');
    // Tens of ms a packet, within the budget: still busy when the signal comes, with 1 or 2 workers.
    const run = riffAsync(['-q', '--lua', path.join(dir, 'slow.lua'), '-r', path.join(FIXTURES, 'http.pcap'), '-w', out]);
    await until(() => /ready/.test(run.stderr()));
    await new Promise((r) => setTimeout(r, 300));
    run.child.kill(sig);
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /deinit ran\n$/);
    const written = Number(/^(\d+) packets written to /m.exec(r.stderr)?.[1]);
    assert.ok(written >= 1, r.stderr);
    assert.equal(countPackets(out), written);
    const processed = Number(/^(\d+) packets processed by Lua$/m.exec(r.stderr)?.[1]);
    assert.ok(processed < 45, 'stopped early');
    assert.equal(r.stdout.toString().split('\n').filter((l) => l.startsWith('packet ')).length, processed);
    assert.match(r.stderr, /^\d+ packets not processed \(stopped early\)$/m);
  });
}

test('a second Ctrl-C exits at once', async () => {
  const dir = tree({
    'stuck.lua': `function setup() io.stderr:write("ready\\n") end
buffer = function(p) end
function deinit() io.stderr:write("deinit\\n") local x = 0 for i = 1, 2e9 do x = x + i end end`,
  });
  const run = riffAsync(['-q', '--lua-budget', '0', '--lua', path.join(dir, 'stuck.lua'), '-i', 'lo'].filter(Boolean));
  await until(() => /ready|unavailable|permission/.test(run.stderr()));
  if (!/ready/.test(run.stderr())) {
    run.child.kill('SIGKILL');
    return;
  }
  await new Promise((r) => setTimeout(r, 200));
  run.child.kill('SIGINT');
  // The script's own line: with 2 workers riff's start-up note names deinit too,
  // and two SIGINTs sent at once are delivered as one.
  await until(() => /^deinit$/m.test(run.stderr()));
  const t0 = Date.now();
  run.child.kill('SIGINT');
  const r = await run.done;
  assert.equal(r.code, 130, r.stderr);
  assert.ok(Date.now() - t0 < 3000, 'left at once');
  // One line says what is abandoned.
  const said = r.stderr.split('\n').filter((l) => /second interrupt/.test(l));
  assert.equal(said.length, 1, r.stderr);
  assert.match(said[0], /^riff: second interrupt: exiting now, abandoning (1 Lua worker|2 Lua workers) still in deinit or report \(their output and state\) and the run's summary$/);
});

test("SIGHUP and SIGUSR1 no longer end riff (exit 129 / Node's inspector): it reloads, reopens, then stops on SIGTERM with its summary", async () => {
  const fifo = path.join(tmpdir(), 'idle.fifo');
  execFileSync('mkfifo', [fifo]);
  const w = spawn('sh', ['-c', `exec 3>"${fifo}"; cat "${path.join(FIXTURES, 'http.pcap')}" >&3; sleep 30`]);
  const run = riffAsync(['-q', '--lua', path.join(FIXTURES, 'count.lua'), '-r', fifo]);
  await until(() => /^riff: /m.test(run.stderr()) || run.child.exitCode !== null, 1500).catch(() => {});
  run.child.kill('SIGHUP');
  await until(() => /reloaded /.test(run.stderr()));
  run.child.kill('SIGUSR1');
  await new Promise((r) => setTimeout(r, 300));
  run.child.kill('SIGTERM');
  const r = await run.done;
  w.kill('SIGKILL');
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /Debugger listening/);
  assert.match(r.stderr, /^riff: SIGHUP: reloading .*count\.lua$/m);
  assert.match(r.stderr, /^1 reload \(SIGHUP\)/m);
  assert.match(r.stderr, /^1 reopen of the output files \(SIGUSR1\)$/m);
  assert.match(r.stderr, /^45 packets processed by Lua$/m);
  // Both generations reported: count.lua's report runs as each generation ends.
  assert.equal((r.stdout.toString().match(/^matches\t\d+$/gm) ?? []).length, 2, r.stdout.toString());
});

/** The summary's last Lua line is there: riff ended the run its own way. */
const SUMMARY = /^\d+ packets read\n\d+ packets passed the filter\n/m;

test('SIGTERM while reading an idle FIFO (no writer, then a writer that sends nothing) exits at once with the summary', async () => {
  const fifo = path.join(tmpdir(), 'idle.fifo');
  execFileSync('mkfifo', [fifo]);
  for (const writer of [false, true]) {
    // The writer holds the FIFO open with only the pcap header sent, then waits.
    const w = writer ? spawn('sh', ['-c', `exec 3>"${fifo}"; head -c 24 "${path.join(FIXTURES, 'http.pcap')}" >&3; sleep 30`]) : null;
    const run = riffAsync(['-q', '-r', fifo]);
    await new Promise((r) => setTimeout(r, 1500));
    const t0 = Date.now();
    run.child.kill('SIGTERM');
    const r = await run.done;
    w?.kill('SIGKILL');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, SUMMARY);
    assert.match(r.stderr, /^0 packets read$/m);
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  }
});

test("SIGTERM within Node's own start-up time still gives the summary", async () => {
  // How long a bare Node takes to start and exit here: riff is sent the
  // signal about then, while its workers boot and its command line loads.
  const t = Date.now();
  execFileSync(process.execPath, ['-e', '0']);
  const delay = Math.max(50, 1.5 * (Date.now() - t));
  const run = riffAsync(['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
  await new Promise((r) => setTimeout(r, delay));
  run.child.kill('SIGTERM');
  const r = await run.done;
  assert.equal(r.signal, null, `killed by the signal after ${delay} ms`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, SUMMARY);
});

test('a full ring behind a worker stuck in a C call (no time limit) still hears SIGTERM: summary, exit 0', async () => {
  const dir = tree({
    'stuck.lua': `function setup() io.stderr:write("ready\\n") end
      function buffer(p) if riff.packet.id == 2 then ("a"):rep(5000):find(".-.-.-.-.-.-.-x") end end`,
  });
  // 24 MiB of packets: more than the 16 MiB ring a file gets, so the capture waits for room behind the stuck VM.
  const big = path.join(tmpdir(), 'big.pcap');
  const rec = Buffer.alloc(16 + 600);
  rec.writeUInt32LE(600, 8);
  rec.writeUInt32LE(600, 12);
  const head = pcapHeader(1, 65535);
  fs.writeFileSync(big, Buffer.concat([head, ...Array(40_000).fill(rec)]));
  // --lua-timeout 0: nothing ends the VM until the signal.
  const run = riffAsync(['-q', '--lua-timeout', '0', '--lua', path.join(dir, 'stuck.lua'), '-r', big]);
  await until(() => /ready/.test(run.stderr()));
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  run.child.kill('SIGTERM');
  const r = await run.done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, SUMMARY);
  // After a stop the stuck VM gets a second, then it is ended: its packet is lost, counted.
  assert.match(r.stderr, /packet 2 still running after 1 s \(riff was told to stop\)/);
  assert.match(r.stderr, /^1 packets lost with 1 Lua worker ended/m);
  assert.ok(Number(/^(\d+) packets read$/m.exec(r.stderr)?.[1]) < 40_000, 'the ring was full: reading had stopped');
  assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
});

const LOUD = `local s = ("B"):rep(100 * 1024 - 1) .. "\\n"
function setup() io.stderr:write("ready\\n") end
function buffer(p) io.write(s) end`;

/**
 * riff with `argv`, its stdout held by the test and never read; once the
 * script has said "ready" on stderr and `settle` ms have passed, `then`
 * signals it. Returns its exit code, the ms from the first signal to its
 * end, and its stderr.
 */
async function stuck(argv: string[], settle: number, then: (child: ReturnType<typeof spawn>) => Promise<void>) {
  const child = spawn(process.execPath, [CLI, '-q', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  // A listener from the start (Node would drain an unwatched stdout at the child's exit), paused: nothing is read until riff has ended.
  const chunks: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => chunks.push(d));
  child.stdout!.pause();
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d));
  const done = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
  await until(() => /ready/.test(err));
  await new Promise((r) => setTimeout(r, settle));
  const t0 = Date.now();
  await then(child);
  const code = await done;
  clearTimeout(kill);
  const ms = Date.now() - t0;
  // What riff wrote before it ended, read now.
  const ended = new Promise((r) => child.stdout!.once('close', r));
  child.stdout!.resume();
  await ended;
  return { code, ms, err, out: Buffer.concat(chunks) };
}

/** riff printing 100 KB a packet to a stdout the test holds and never reads; `sig` once it is stuck. */
function stalled(sig: NodeJS.Signals, then?: (child: ReturnType<typeof spawn>) => Promise<void>, extra: string[] = []) {
  const dir = tree({ 'loud.lua': LOUD });
  return stuck([...extra, '--lua', path.join(dir, 'loud.lua'), '-r', path.join(FIXTURES, 'http.pcap')], 1000, async (child) => {
    child.kill(sig);
    await then?.(child);
  });
}

test("Ctrl-C with a stdout reader that stopped reading: riff waits for the reader as tcpdump does, and a second Ctrl-C leaves at once", async () => {
  let alive = false;
  const { code, ms } = await stalled('SIGINT', async (child) => {
    await new Promise((r) => setTimeout(r, 3000));
    alive = child.exitCode === null;
    child.kill('SIGINT');
  });
  assert.ok(alive, 'riff still waiting for its reader 3 s after the first Ctrl-C');
  // The worker is blocked in the kernel writing: leaving does not wait for its thread.
  assert.equal(code, 130);
  assert.ok(ms < 8000, `ended ${ms} ms after the first Ctrl-C`);
});

test("a stdout reader that stops reading holds riff no longer than a second's grace after SIGTERM; the summary says what was not written", async () => {
  const { code, ms, err } = await stalled('SIGTERM');
  assert.equal(code, 0, err);
  assert.ok(ms < 8000, `ended ${ms} ms after SIGTERM`);
  // (Where it waits depends on the batch: a packet's own write, or the batch's end; RIFF_WORKERS=2 runs this too.)
  assert.match(err, /loud\.lua: (packet \d+|the end of a batch) waiting 1 s to write its output after riff was told to stop \(standard output's reader is not reading; what it held is not written\); worker \d was ended$/m);
  assert.match(err, /^45 packets read$/m);
  const n = (re: RegExp) => Number(re.exec(err)?.[1] ?? 0);
  assert.equal(n(/^(\d+) packets processed by Lua$/m) + n(/^(\d+) packets lost with/m) + n(/^(\d+) packets not processed/m), 45, err);
});

test('--workers 2, SIGTERM, a stdout reader that stopped: every packet is counted once (processed, lost or not processed)', async () => {
  const { code, ms, err } = await stalled('SIGTERM', undefined, ['--workers', '2']);
  assert.equal(code, 0, err);
  assert.ok(ms < 8000, `ended ${ms} ms after SIGTERM`);
  const n = (re: RegExp) => Number(re.exec(err)?.[1] ?? 0);
  const processed = n(/^(\d+) packets processed by Lua$/m);
  const lost = n(/^(\d+) packets lost with/m);
  const notProcessed = n(/^(\d+) packets not processed/m);
  assert.equal(processed + lost + notProcessed, 45, err);
});

/**
 * riff's own thread writing to a reader that stopped reading: -w - or
 * json:- records (the capture thread writes those, not a worker), stdout
 * held by the test and never read; `sigs` sent once it is stuck.
 */
async function stalledCapture(sigs: NodeJS.Signals[], args: string[], gap = 300) {
  const dir = tmpdir();
  const file = path.join(dir, 'big.pcap');
  const rec = Buffer.alloc(16 + 1000, 0x41);
  rec.writeUInt32LE(1000, 8);
  rec.writeUInt32LE(1000, 12);
  fs.writeFileSync(file, Buffer.concat([pcapHeader(), ...Array.from({ length: 3000 }, (_, i) => (rec.writeUInt32LE(1_700_000_000 + i, 0), Buffer.from(rec)))]));
  fs.writeFileSync(path.join(dir, 'rec.lua'), 'local s = ("R"):rep(2000)\nio.stderr:write("ready\\n")\nreturn { { push = function(self, p) riff.emit("r", { s = s }) return true end } }\n');
  let aliveAfterFirst = false;
  const r = await stuck(['--lua', path.join(dir, 'rec.lua'), '-r', file, ...args], 1500, async (child) => {
    for (const [i, sig] of sigs.entries()) {
      if (i) {
        await new Promise((res) => setTimeout(res, gap));
        aliveAfterFirst ||= child.exitCode === null && child.signalCode === null;
      }
      child.kill(sig);
    }
  });
  return { ...r, aliveAfterFirst };
}

test("riff's own thread writing -w - to a reader that stopped reading: SIGTERM ends it a second later, the summary counts what was not written, exit 0", async () => {
  const { code, ms, err, out } = await stalledCapture(['SIGTERM'], ['-w', '-']);
  assert.equal(code, 0, err);
  assert.ok(ms < 8000, `ended ${ms} ms after SIGTERM`);
  assert.match(err, /^riff: -w -: its reader took less than 16 KiB in a second after riff was told to stop writing standard output/m);
  const m = /^(\d+) packets written to standard output, (\d+) not written: its reader took less than 16 KiB in a second after riff was told to stop$/m.exec(err);
  assert.ok(m, err);
  // Written means whole in what the reader got: the header, then records, then at most part of one.
  let whole = 0;
  for (let p = 24; p + 16 <= out.length && p + 16 + out.readUInt32LE(p + 8) <= out.length; p += 16 + out.readUInt32LE(p + 8)) whole++;
  assert.equal(Number(m[1]), whole);
  assert.equal(Number(m[1]) + Number(m[2]), Number(/^(\d+) packets passed the filter$/m.exec(err)?.[1]), err);
});

test("riff's own thread writing json:- records to a reader that stopped reading: SIGTERM ends it a second later, the records counted as not written, exit 0", async () => {
  const { code, ms, err, out } = await stalledCapture(['SIGTERM'], ['-o', 'json:-']);
  assert.equal(code, 0, err);
  assert.ok(ms < 8000, `ended ${ms} ms after SIGTERM`);
  const m = /^output json:-: (\d+) written, (\d+) not written: standard output's reader took less than 16 KiB in a second after riff was told to stop$/m.exec(err);
  assert.ok(m, err);
  assert.equal(Number(m[1]), out.toString('latin1').split('\n').length - 1, 'written: the whole lines the reader got');
  assert.equal(Number(m[1]) + Number(m[2]), Number(/^(\d+) records emitted$/m.exec(err)?.[1]), err);
});

test("riff's own thread writing -w - to a reader that stopped reading: one Ctrl-C waits for the reader as tcpdump does, a second leaves at once", async () => {
  const { code, ms, err, aliveAfterFirst } = await stalledCapture(['SIGINT', 'SIGINT'], ['-w', '-'], 3000);
  assert.ok(aliveAfterFirst, 'riff still waiting for its reader 3 s after the first Ctrl-C');
  assert.equal(code, 130, err);
  assert.ok(ms < 8000, `ended ${ms} ms after the first Ctrl-C`);
  assert.match(err, /^riff: second interrupt: exiting now/m);
});

test('-w to a FIFO whose reader stopped reading: SIGTERM ends riff a second later, and the packets counted as written are the whole ones the reader gets', async () => {
  const dir = tmpdir();
  const fifo = path.join(dir, 'out.fifo');
  execFileSync('mkfifo', [fifo]);
  // The reader opens the FIFO (so riff's open for writing goes through) and reads nothing until riff has ended.
  const rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const { code, ms, err } = await stalledCapture(['SIGTERM'], ['-w', fifo]);
    assert.equal(code, 0, err);
    assert.ok(ms < 8000, `ended ${ms} ms after SIGTERM`);
    const m = new RegExp(`^(\\d+) packets written to ${fifo.replace(/[.]/g, '\\.')}, (\\d+) not written: its reader took less than 16 KiB in a second after riff was told to stop$`, 'm').exec(err);
    assert.ok(m, err);
    const chunks: Buffer[] = [];
    const b = Buffer.alloc(1 << 16);
    for (let n; (n = fs.readSync(rfd, b)) > 0; ) chunks.push(Buffer.from(b.subarray(0, n)));
    const out = Buffer.concat(chunks);
    let whole = 0;
    for (let p = 24; p + 16 <= out.length && p + 16 + out.readUInt32LE(p + 8) <= out.length; p += 16 + out.readUInt32LE(p + 8)) whole++;
    assert.equal(Number(m[1]), whole);
  } finally {
    fs.closeSync(rfd);
  }
});

test('SIGTERM while riff waits for a FIFO named by -w or json: to get a reader: one line, exit 1 (open(2) would wait deaf to it); a reader that comes gets everything', async () => {
  for (const out of [(f: string) => ['-w', f], (f: string) => ['-o', `json:${f}`]]) {
    const fifo = path.join(tmpdir(), 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const child = spawn(process.execPath, [CLI, '-q', '-r', path.join(FIXTURES, 'http.pcap'), ...out(fifo)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d));
    const done = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await new Promise((r) => setTimeout(r, 1500));
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await done;
    clearTimeout(kill);
    assert.equal(code, 1, err);
    assert.ok(Date.now() - t0 < 3000, `ended ${Date.now() - t0} ms after SIGTERM`);
    assert.match(err, new RegExp(`^riff: (-w |--output json:)${fifo.replace(/[.]/g, '\\.')}: riff was told to stop before a reader opened this FIFO$`, 'm'));
  }
  // A reader that opens the FIFO later gets the whole capture.
  const fifo = path.join(tmpdir(), 'late.fifo');
  execFileSync('mkfifo', [fifo]);
  const child = spawn(process.execPath, [CLI, '-q', '-r', path.join(FIXTURES, 'http.pcap'), '-w', fifo], { stdio: ['ignore', 'ignore', 'pipe'] });
  const done = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await new Promise((r) => setTimeout(r, 1000));
  const got = fs.readFileSync(fifo);
  assert.equal(await done, 0);
  const copy = path.join(tmpdir(), 'late.pcap');
  fs.writeFileSync(copy, got);
  assert.equal(countPackets(copy), 45);
});
