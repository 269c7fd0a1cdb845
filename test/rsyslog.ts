// A real rsyslogd for the tests, started as a child on loopback ports of
// its own, writing every message it gets to a file the test reads.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { hasCommand, isRoot, tmpdir } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'tcp') {
    return new Promise((resolve, reject) => {
      const s = net.createServer();
      s.on('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
  }
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

export class Rsyslog {
  child: ChildProcess | null = null;
  readonly dir = tmpdir('riff-rsyslog-');
  readonly out = path.join(this.dir, 'out.log');
  readonly conf = path.join(this.dir, 'rsyslog.conf');
  udpPort = 0;
  tcpPort = 0;
  log = '';

  async init(): Promise<void> {
    this.udpPort = await freePort('udp');
    this.tcpPort = await freePort('tcp');
    // Each line: facility,severity,app,msgid TAB structured data TAB the raw message.
    fs.writeFileSync(
      this.conf,
      `global(workDirectory="${this.dir}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="${this.udpPort}")
input(type="imtcp" address="127.0.0.1" port="${this.tcpPort}")
template(name="raw" type="string" string="%syslogfacility%,%syslogseverity%,%app-name%,%msgid%\\t%structured-data%\\t%rawmsg%\\n")
action(type="omfile" file="${this.out}" template="raw")
`,
    );
  }

  async start(): Promise<void> {
    const pid = path.join(this.dir, 'rsyslogd.pid');
    fs.rmSync(pid, { force: true });
    const child = spawn('rsyslogd', ['-n', '-f', this.conf, '-i', pid], { stdio: ['ignore', 'pipe', 'pipe'] });
    const reap = () => child.kill('SIGKILL'); // never outlive the test process
    process.once('exit', reap);
    child.once('exit', () => process.off('exit', reap));
    child.stdout!.on('data', (d) => (this.log += d));
    child.stderr!.on('data', (d) => (this.log += d));
    this.child = child;
    // Ready when the TCP port accepts.
    const end = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) assert.fail(`rsyslogd exited (${child.exitCode}): ${this.log}`);
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: this.tcpPort });
        s.on('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (ok) break;
      if (Date.now() > end) assert.fail(`rsyslogd did not listen within 10 s: ${this.log}`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
    this.child = null;
  }

  lines(): { fac: number; sev: number; app: string; msgid: string; sd: string; raw: string }[] {
    if (!fs.existsSync(this.out)) return [];
    const text = fs.readFileSync(this.out, 'utf8');
    // rsyslogd may be mid-line: only complete lines count.
    return text
      .slice(0, text.lastIndexOf('\n') + 1)
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [head, sd, ...raw] = l.split('\t');
        const [fac, sev, app, msgid] = head.split(',');
        return { fac: Number(fac), sev: Number(sev), app, msgid, sd, raw: raw.join('\t') };
      });
  }

  /** The JSON MSG of each line from `app`. */
  json(app: string): Record<string, unknown>[] {
    return this.lines()
      .filter((l) => l.app === app)
      .map((l) => JSON.parse(l.raw.slice(l.raw.indexOf('{'))) as Record<string, unknown>);
  }
}

export const rsyslogSkip: string | false = !hasCommand('rsyslogd')
  ? 'rsyslogd is not installed (apt-get install rsyslog)'
  : !isRoot
    ? 'rsyslogd needs root here (it is started as a child on loopback)'
    : false;

