// Live capture on a real interface: a network namespace holding a veth end
// named eth1, as the original riff's watch.c expected, fed from a second
// namespace. Needs root (CI runs as root) and libpcap.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { riffAsync, isRoot, hasCommand, FIXTURES, reportIds, CLI, ROOT } from './helpers.js';
import { liveUnavailable } from '../src/capture/live.js';

const NS_CAP = `riffcap${process.pid}`;
const NS_PEER = `riffpeer${process.pid}`;
const why = !isRoot
  ? 'live capture needs root (run the tests as root, as CI does)'
  : !hasCommand('ip')
    ? 'needs iproute2 (ip netns)'
    : liveUnavailable();

function sh(args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

before(() => {
  if (why) return;
  sh(['netns', 'add', NS_CAP]);
  sh(['netns', 'add', NS_PEER]);
  sh(['link', 'add', 'eth1', 'netns', NS_CAP, 'type', 'veth', 'peer', 'name', 'peer0', 'netns', NS_PEER]);
  for (const [ns, dev, addr] of [
    [NS_CAP, 'eth1', '10.199.0.1/24'],
    [NS_PEER, 'peer0', '10.199.0.2/24'],
  ]) {
    // No IPv6 chatter (router solicitations, MLD) on the wire under test.
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
    sh(['-n', ns, 'addr', 'add', addr, 'dev', dev]);
    sh(['-n', ns, 'link', 'set', dev, 'up']);
    sh(['-n', ns, 'link', 'set', 'lo', 'up']);
  }
});

after(() => {
  if (why) return;
  spawnSync('ip', ['netns', 'del', NS_CAP]);
  spawnSync('ip', ['netns', 'del', NS_PEER]);
});

/** Send UDP datagrams from the peer namespace to 10.199.0.1:port. */
function sendUdp(port: number, payloads: string[]): void {
  const js = `
    const s = require('dgram').createSocket('udp4');
    const p = ${JSON.stringify(payloads)};
    let i = 0;
    const next = () => i < p.length ? s.send(p[i++], ${port}, '10.199.0.1', () => setTimeout(next, 5)) : s.close();
    next();`;
  execFileSync('ip', ['netns', 'exec', NS_PEER, process.execPath, '-e', js], { stdio: 'pipe' });
}

async function waitFor(pred: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting for riff');
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('riff --lua pipeline.lua -i eth1 -c N sees exactly the N packets sent (original riff tree, config.lua filter)', { skip: why ?? false }, async () => {
  const N = 7;
  const tree = path.join(FIXTURES, 'original-riff');
  const child = spawn('ip', ['netns', 'exec', NS_CAP, process.execPath, CLI, '--lua', 'pipeline.lua', '-i', 'eth1', '-c', String(N)], {
    cwd: tree,
    env: { ...process.env, TZ: 'UTC' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  await waitFor(() => /listening on eth1/.test(err));
  const payloads = Array.from({ length: N + 3 }, (_, i) => (i % 3 === 0 ? `GET /${i} pcap testcase` : `datagram ${i}`));
  // Packets to another port must not count: config.lua's filter is "dst port 80".
  sendUdp(8080, ['not for port 80']);
  sendUdp(80, payloads);
  const code = await Promise.race([done, new Promise<string>((r) => setTimeout(() => r('timeout'), 20_000))]);
  if (code === 'timeout') child.kill('SIGKILL');
  assert.equal(code, 0, err);
  const stdout = Buffer.concat(out);
  assert.deepEqual(reportIds(stdout), Array.from({ length: N }, (_, i) => i + 1));
  assert.match(err, /filter from config\.lua: dst port 80/);
  assert.match(err, /declares no plugins; running the riff tree/);
  // Each of the N datagrams' payloads is in the output, byte-exact, and the
  // banner follows exactly the ones holding "pcap".
  const text = stdout.toString('latin1');
  const sent = payloads.slice(0, N);
  for (const p of sent) assert.ok(text.includes(p), `missing ${p}`);
  assert.equal(text.split('###########[ OK ]#############').length - 1, sent.filter((p) => p.includes('pcap')).length);
  assert.match(err, new RegExp(`^${N} packets captured$`, 'm'));
  assert.match(err, new RegExp(`^${N} packets processed by Lua$`, 'm'));
});

test('live capture on lo with a filter from the command line', { skip: why ?? false }, async () => {
  const run = riffAsync(['-q', '--lua', path.join(FIXTURES, 'count.lua'), '-i', 'lo', '-c', '3', 'udp and dst port 47999'], { cwd: ROOT });
  await waitFor(() => /listening on lo/.test(run.stderr()));
  const js = `const s=require('dgram').createSocket('udp4');let i=0;const n=()=>i++<5?s.send('pcap '+i,47999,'127.0.0.1',()=>setTimeout(n,5)):s.close();n();`;
  execFileSync(process.execPath, ['-e', js]);
  const r = await run.done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^matches\t3$/m);
  assert.match(r.stderr, /^3 packets processed by Lua$/m);
});
