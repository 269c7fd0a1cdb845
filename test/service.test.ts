// The systemd unit riff ships (scripts/systemd/riff.service): systemd accepts
// it, and its ExecStart, expanded the way systemd expands it, runs riff as the
// unit would and stops cleanly on the unit's KillSignal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import dgram from 'node:dgram';
import { spawn, spawnSync } from 'node:child_process';
import { ROOT, tmpdir } from './helpers.js';

const UNIT = path.join(ROOT, 'scripts', 'systemd', 'riff.service');
const text = fs.readFileSync(UNIT, 'utf8');
const directive = (name: string) => {
  const m = new RegExp(`^${name}=(.*)$`, 'm').exec(text);
  assert.ok(m, `${name}= is in the unit`);
  return m[1];
};
const isRoot = process.getuid?.() === 0;
const hasSystemdAnalyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).status === 0;

/** systemd's ExecStart expansion: ${VAR} is one word, $VAR splits on white space. */
function expand(line: string, env: Record<string, string>): string[] {
  const words: string[] = [];
  for (const raw of line.trim().split(/\s+/)) {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(raw);
    if (whole) {
      words.push(...(env[whole[1]] ?? '').split(/\s+/).filter(Boolean));
      continue;
    }
    words.push(raw.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => env[v] ?? ''));
  }
  return words;
}

test('systemd accepts the unit', { skip: !hasSystemdAnalyze && 'systemd-analyze is not installed' }, () => {
  const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', r.stderr);
});

/** A Unix datagram socket a service manager would listen on ($NOTIFY_SOCKET): python3 prints each message it gets. */
function notifySocket(): { path: string; messages: () => string[]; stop: () => void } {
  const dir = tmpdir('riff-notify-');
  const sockPath = path.join(dir, 'notify');
  const py = spawn('python3', ['-u', '-c', `import socket,sys
s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("bound", flush=True)
while True: print(s.recv(4096).decode(), flush=True)`, sockPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  let got = '';
  py.stdout.on('data', (d) => (got += d));
  return { path: sockPath, messages: () => got.split('\n').filter((l) => l && l !== 'bound'), stop: () => py.kill() };
}

test('under a Type=notify manager riff says READY=1 once it can take signals', async () => {
  assert.equal(directive('Type'), 'notify');
  const n = notifySocket();
  for (let i = 0; i < 100 && !fs.existsSync(n.path); i++) await new Promise((r) => setTimeout(r, 20));
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'riff.cjs'), '-q', '-r', path.join(ROOT, 'fixtures', 'http.pcap'), '--lua', path.join(ROOT, 'fixtures', 'count.lua')], {
    encoding: 'utf8',
    env: { ...process.env, NOTIFY_SOCKET: n.path },
  });
  assert.equal(r.status, 0, r.stderr);
  await new Promise((res) => setTimeout(res, 200));
  n.stop();
  assert.deepEqual(n.messages(), ['READY=1']);
});

test('the unit runs riff with capabilities, not as root, and reloads by signal', () => {
  assert.match(directive('AmbientCapabilities'), /CAP_NET_RAW/);
  assert.match(directive('AmbientCapabilities'), /CAP_NET_ADMIN/);
  assert.equal(directive('DynamicUser'), 'yes');
  assert.equal(directive('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.equal(directive('Restart'), 'on-failure');
  assert.equal(directive('StandardError'), 'journal');
});

test("the unit's ExecStart, as systemd expands it, captures, reloads on the unit's ExecReload, and stops cleanly on SIGTERM", { skip: !isRoot && 'live capture needs root' }, async () => {
  const logs = tmpdir('riff-unit-');
  const defaults = Object.fromEntries(
    directive('Environment')
      .split(/\s+/)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  assert.ok('RIFF_IFACE' in defaults && 'RIFF_SCRIPT' in defaults);
  const env = { ...defaults, RIFF_IFACE: 'lo', RIFF_SCRIPT: path.join(ROOT, 'fixtures', 'count.lua'), LOGS_DIRECTORY: logs, RIFF_OPTS: '' };
  const argv = expand(directive('ExecStart'), env);
  assert.equal(argv[0], '/usr/bin/riff');
  // /usr/bin/riff is where setup's npm link puts riff here; run this checkout's.
  const n = notifySocket();
  for (let i = 0; i < 100 && !fs.existsSync(n.path); i++) await new Promise((r) => setTimeout(r, 20));
  const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'riff.cjs'), ...argv.slice(1)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: n.path } });
  let err = '';
  let out = '';
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d) => (out += d));
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  for (let i = 0; i < 100 && !/listening on lo/.test(err); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(err, /listening on lo/);
  const sock = dgram.createSocket('udp4');
  const send = async (from: number) => {
    for (let i = from; i < from + 5; i++) await new Promise<void>((r) => sock.send(Buffer.from('pcap test ' + i), 9, '127.0.0.1', () => r()));
    await new Promise((r) => setTimeout(r, 300));
  };
  await send(0);
  // `systemctl reload riff`: the unit's ExecReload, run for real on the running ExecStart process.
  const reload = expand(directive('ExecReload'), { MAINPID: String(child.pid) });
  const k = spawnSync(reload[0], reload.slice(1), { encoding: 'utf8' });
  assert.equal(k.status, 0, k.stderr);
  for (let i = 0; i < 200 && !/reloaded /.test(err); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(err, /^riff: reloaded .*count\.lua \(reload 1\)/m);
  await send(5);
  sock.close();
  child.kill('SIGTERM');
  const code = await closed;
  assert.equal(code, 0, err);
  // Each generation of the script reports as it ends: the first at the reload, the second at SIGTERM.
  assert.match(out, /^matches\t([5-9]|\d\d+)\nmatches\t([5-9]|\d\d+)\n$/, `${out}\n${err}`);
  assert.match(err, /^1 reload \(SIGHUP\)/m);
  assert.match(err, /packets captured/);
  assert.ok(fs.existsSync(path.join(logs, 'records.json')), 'the records file is opened in LOGS_DIRECTORY');
  await new Promise((r) => setTimeout(r, 200));
  n.stop();
  // What systemd is told: started, reloading and ready again, stopping.
  assert.deepEqual(n.messages(), ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
});
