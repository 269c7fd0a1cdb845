// Ctrl-C, SIGTERM and closed pipes: riff stops capturing, runs deinit,
// flushes stdout and the -w file, prints its summary and exits 0; a second
// Ctrl-C leaves at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Batch } from '../src/capture/batch.js';
import { openCaptureFile } from '../src/capture/file.js';
import { riffAsync, tree, tmpdir, FIXTURES } from './helpers.js';

const SLOW = `
function setup() io.stderr:write("ready\\n") end
buffer = function(p)
  local x = 0
  for i = 1, 2000000 do x = x + i end
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
function deinit() io.stderr:write("deinit\\n") local x = 0 for i = 1, 2e8 do x = x + i end end`,
  });
  const run = riffAsync(['-q', '--lua-budget', '0', '--lua', path.join(dir, 'stuck.lua'), '-i', 'lo'].filter(Boolean));
  await until(() => /ready|unavailable|permission/.test(run.stderr()));
  if (!/ready/.test(run.stderr())) {
    run.child.kill('SIGKILL');
    return;
  }
  await new Promise((r) => setTimeout(r, 200));
  run.child.kill('SIGINT');
  await until(() => /deinit/.test(run.stderr()));
  const t0 = Date.now();
  run.child.kill('SIGINT');
  const r = await run.done;
  assert.equal(r.code, 130);
  assert.ok(Date.now() - t0 < 3000, 'left at once');
});
