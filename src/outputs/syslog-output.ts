// --output syslog:udp://HOST:PORT and syslog:tcp://HOST:PORT: each record as
// one syslog message.
//
// RFC 5424 (default):
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
//   TIMESTAMP is the record's time (UTC, microseconds), MSGID its type
//   (at most 32 characters), PROCID riff's pid. With msg=json, SD is '-' and
//   MSG the record as a JSON line (the json: output's rules, host = HOSTNAME).
//   With msg=sd the fields are structured data, [riff@32473 name="value" ...]
//   (32473 is the enterprise number RFC 5612 reserves for examples), and MSG
//   is empty: names are cut to 32 characters with = ] " space and non-ASCII
//   as '_'; values are text (bytes that are not UTF-8, and control
//   characters, as \xHH, a backslash as \\, as in the text output; tables as
//   JSON), then with " \ ] escaped as RFC 5424 says.
// RFC 3164 (format=3164):
//   <PRI>Mmm dd hh:mm:ss HOSTNAME APP-NAME[PID]: MSG     (local time)
//
// UDP: one message per datagram, sent as it comes; "queued" counts datagrams
// not yet handed to the kernel; past queue=N new ones are dropped (counted).
// TCP: RFC 6587 octet counting ("LEN SP MSG"; framing=lf for a newline after
// each message instead). Messages wait in a queue while the connection is
// down or slow; riff reconnects with backoff (0.2 s doubling to 5 s). Past
// queue=N records the oldest (drop=oldest, default) or the newest
// (drop=newest) are dropped and counted. A TCP sender cannot know what a
// server that went away had read: messages written less than resend=MS
// (default 1000) before a broken connection are sent again after the
// reconnect, so a restart loses nothing but may duplicate a few (counted as
// "resent"; resend=0 turns this off).
// close() waits up to timeout=MS (default 5000) for the queue to drain; what
// is left is counted as dropped.
//
// Why records are lost is said, not guessed: a refused connection, a host
// name that does not resolve or an unreachable host is told at once in one
// line (onNotice, once per reason) with the host and port, and every record
// that does not reach the server is counted under its reason ("connection
// refused by 127.0.0.1:514", "host name loghost not found", "queue full").
// UDP uses a connected socket, so the kernel's port-unreachable answers are
// heard (a datagram sent before the answer came back counts as written: UDP
// cannot know). The kernel tells the answer on the next send, once: from
// then on the address is unusable for 5 s and UDP records are lost at once
// (counted), then one datagram probes it (written, as the first was) and the
// next send hears whether it is still refused. A name that does not resolve
// is looked up again every 5 s. TCP records wait in the queue. At close, a TCP
// connection that is down gets one more attempt at once; if the server was
// never reached in this run and that attempt fails too, close does not wait
// out the timeout (a server reached before may be restarting: riff retries).
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { escapeBytes, floatText, type RecordData, type Value } from './records.js';
import { jsonValue, toJsonLine } from './json-output.js';
import type { OutputStats, RecordOutput } from './types.js';
import { specError, Losses } from './types.js';

export const FACILITIES: Record<string, number> = {
  kern: 0, user: 1, mail: 2, daemon: 3, auth: 4, syslog: 5, lpr: 6, news: 7, uucp: 8, cron: 9,
  authpriv: 10, ftp: 11, ntp: 12, security: 13, audit: 13, console: 14, clock: 15,
  local0: 16, local1: 17, local2: 18, local3: 19, local4: 20, local5: 21, local6: 22, local7: 23,
};
export const SEVERITIES: Record<string, number> = {
  emerg: 0, panic: 0, alert: 1, crit: 2, err: 3, error: 3, warning: 4, warn: 4, notice: 5, info: 6, debug: 7,
};

export interface SyslogOptions {
  transport: 'udp' | 'tcp';
  host: string;
  port: number;
  format: '5424' | '3164';
  facility: number;
  severity: number;
  app: string;
  hostname: string;
  msg: 'json' | 'sd';
  queue: number;
  drop: 'oldest' | 'newest';
  framing: 'octet' | 'lf';
  timeout: number;
  resend: number;
}

const OPTION_NAMES = 'format, facility, severity, app, hostname, msg, queue, drop, framing, timeout, resend';

function printable(s: string, max: number, fallback = '-'): string {
  const t = s.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return t || fallback;
}

/** Parse what follows "syslog:" (e.g. udp://127.0.0.1:514?format=3164). */
export function parseSyslogSpec(spec: string, rest: string): SyslogOptions {
  const m = /^(udp|tcp):\/\/(\[[0-9a-fA-F:.]+\]|[^:/?\[\]]+)(?::(\d+))?\/?(?:\?(.*))?$/.exec(rest);
  if (!m) {
    throw specError(spec, 'expected syslog:udp://HOST:PORT or syslog:tcp://HOST:PORT, options after ? (e.g. syslog:udp://127.0.0.1:514?format=3164&facility=local0)');
  }
  const transport = m[1] as 'udp' | 'tcp';
  const host = m[2].replace(/^\[|\]$/g, '');
  // A host name or an address, nothing else (a '%' or a stray character would only fail later, as a name not found).
  if (!m[2].startsWith('[') && !/^[A-Za-z0-9._-]+$/.test(host)) throw specError(spec, `'${host}' is not a host name or IP address`);
  const port = m[3] === undefined ? (transport === 'udp' ? 514 : 601) : Number(m[3]);
  if (!(port >= 1 && port <= 65535)) throw specError(spec, `port ${m[3]} is out of range (1-65535)`);
  const o: SyslogOptions = {
    transport, host, port,
    format: '5424', facility: FACILITIES.user, severity: SEVERITIES.info,
    app: 'riff', hostname: printable(os.hostname(), 255),
    msg: 'json', queue: 10000, drop: 'oldest', framing: 'octet', timeout: 5000, resend: 1000,
  };
  const int = (k: string, v: string, lo: number, hi: number) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < lo || n > hi) throw specError(spec, `${k}=${v}: expected a whole number from ${lo} to ${hi}`);
    return n;
  };
  for (const [k, v] of new URLSearchParams(m[4] ?? '')) {
    switch (k) {
      case 'format':
        if (v !== '5424' && v !== '3164') throw specError(spec, `format=${v}: use format=5424 (default) or format=3164`);
        o.format = v;
        break;
      case 'facility':
        o.facility = /^\d+$/.test(v) ? int(k, v, 0, 23) : FACILITIES[v.toLowerCase()] ?? -1;
        if (o.facility < 0) throw specError(spec, `facility=${v}: use a name (user, daemon, local0..local7, ...) or 0-23`);
        break;
      case 'severity':
        o.severity = /^\d+$/.test(v) ? int(k, v, 0, 7) : SEVERITIES[v.toLowerCase()] ?? -1;
        if (o.severity < 0) throw specError(spec, `severity=${v}: use emerg, alert, crit, err, warning, notice, info, debug or 0-7`);
        break;
      case 'app':
        if (!/^[\x21-\x7e]{1,48}$/.test(v)) throw specError(spec, `app=${v}: 1-48 printable ASCII characters, no spaces`);
        o.app = v;
        break;
      case 'hostname':
        if (!/^[\x21-\x7e]{1,255}$/.test(v)) throw specError(spec, `hostname=${v}: 1-255 printable ASCII characters, no spaces`);
        o.hostname = v;
        break;
      case 'msg':
        if (v !== 'json' && v !== 'sd') throw specError(spec, `msg=${v}: use msg=json (default) or msg=sd (RFC 5424 structured data)`);
        o.msg = v;
        break;
      case 'queue':
        o.queue = int(k, v, 1, 10_000_000);
        break;
      case 'drop':
        if (v !== 'oldest' && v !== 'newest') throw specError(spec, `drop=${v}: use drop=oldest (default) or drop=newest`);
        o.drop = v;
        break;
      case 'framing':
        if (v !== 'octet' && v !== 'lf') throw specError(spec, `framing=${v}: use framing=octet (default, RFC 6587) or framing=lf`);
        o.framing = v;
        break;
      case 'timeout':
        o.timeout = int(k, v, 0, 3_600_000);
        break;
      case 'resend':
        o.resend = int(k, v, 0, 3_600_000);
        break;
      default:
        throw specError(spec, `unknown option '${k}'; syslog takes ${OPTION_NAMES}`);
    }
  }
  if (o.msg === 'sd' && o.format !== '5424') throw specError(spec, 'msg=sd needs RFC 5424 (drop format=3164)');
  return o;
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

// Years 0000-9999 only (RFC 3339); a capture's garbage time gets NILVALUE.
const MAX_SEC = 253402300799;

function ts5424(sec: number, nsec: number): string {
  if (!(sec >= 0 && sec <= MAX_SEC)) return '-';
  const iso = new Date(sec * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  return `${iso.slice(0, 19)}.${String(Math.floor(nsec / 1000)).padStart(6, '0')}Z`;
}

function ts3164(sec: number): string {
  const d = new Date(sec >= 0 && sec <= MAX_SEC ? sec * 1000 : Date.now());
  const p = (n: number) => String(n).padStart(2, '0');
  return `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function sdText(v: Value): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return floatText(v);
  if (typeof v === 'boolean') return String(v);
  if (Buffer.isBuffer(v)) return escapeBytes(v).replace(/[\x00-\x1f\x7f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
  const out: string[] = [];
  jsonValue(v, out);
  return out.join('');
}

/** The record as RFC 5424 structured data: [riff@32473 name="value" ...] ('-' if no fields). */
export function structuredData(rec: RecordData): string {
  const keys = Object.keys(rec.fields);
  if (!keys.length) return '-';
  let sd = '[riff@32473';
  for (const k of keys) {
    const name = k.replace(/[^\x21-\x7e]|[=\]"]/g, '_').slice(0, 32) || '_';
    sd += ` ${name}="${sdText(rec.fields[k]).replace(/["\\\]]/g, (c) => '\\' + c)}"`;
  }
  return sd + ']';
}

/** One record as a syslog message (without transport framing). */
export function formatSyslog(rec: RecordData, o: SyslogOptions, pid = process.pid): Buffer {
  const pri = `<${o.facility * 8 + o.severity}>`;
  if (o.format === '3164') {
    return Buffer.from(`${pri}${ts3164(rec.sec)} ${o.hostname} ${o.app}[${pid}]: ${toJsonLine(rec, o.hostname)}`, 'utf8');
  }
  const head = `${pri}1 ${ts5424(rec.sec, rec.nsec)} ${o.hostname} ${o.app} ${pid} ${printable(rec.type, 32)}`;
  if (o.msg === 'sd') return Buffer.from(`${head} ${structuredData(rec)}`, 'utf8');
  return Buffer.from(`${head} - ${toJsonLine(rec, o.hostname)}`, 'utf8');
}

// ---------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------

interface Entry {
  frame: Buffer;
  /** when the kernel took it (0: not yet) */
  at: number;
  counted: boolean;
}

/** A FIFO with O(1) push/shift at both ends (enough for our queue). */
class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(x: T): void {
    this.items.push(x);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }
  pop(): T | undefined {
    if (this.length === 0) return undefined;
    return this.items.pop();
  }
  unshiftAll(xs: T[]): void {
    this.items = [...xs, ...this.items.slice(this.head)];
    this.head = 0;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

const BACKOFF_MIN = 200;
const UDP_RETRY = 5000;
// Send errors that say the address is unusable (an ICMP answer), not that one datagram was (EMSGSIZE).
const UDP_ADDRESS_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

/** A network error as a reason a user can act on, naming host and port. */
export function netReason(e: unknown, host: string, port: number): string {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  const at = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  switch (code) {
    case 'ECONNREFUSED':
      return `connection refused by ${at} (nothing listening)`;
    case 'ENOTFOUND':
      return `host name ${host} not found (port ${port})`;
    case 'EAI_AGAIN':
      return `host name ${host} could not be looked up (DNS not answering; port ${port})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${at} unreachable (no route)`;
    case 'ETIMEDOUT':
      return `connection to ${at} timed out`;
    case 'ECONNRESET':
    case 'EPIPE':
      return `connection to ${at} broken`;
    default:
      return `${at}: ${String((e as Error)?.message ?? e)}`;
  }
}
const BACKOFF_MAX = 5000;

export interface SyslogStats extends OutputStats {
  /** TCP: messages sent again after a broken connection. */
  resent: number;
  connected: boolean;
  lastError: string | null;
}

export class SyslogOutput implements RecordOutput {
  private written = 0;
  private readonly losses = new Losses();
  private resent = 0;
  private lastError: string | null = null;
  /** Why the destination cannot be reached now (null: it can, as far as riff knows). */
  private reason: string | null = null;
  private readonly noticed = new Set<string>();
  onNotice: ((line: string) => void) | null = null;
  private closing = false;
  private closed = false;
  private waiters: (() => void)[] = [];

  // udp
  private udp: dgram.Socket | null = null;
  private udpPending = 0;
  private udpState: 'connecting' | 'up' | 'down' = 'down';
  private udpRetryAt = 0;
  /** Connected, but the address refused (an ICMP error): records are lost at once until then, then one probes. */
  private udpRefusedUntil = 0;
  /** Frames written while the socket connects. */
  private udpWaiting: Buffer[] = [];

  // tcp
  private queue = new Deque<Entry>();
  private inflight: Entry[] = [];
  /** entries in inflight whose write has not completed */
  private unconfirmed = 0;
  private sock: net.Socket | null = null;
  private connected = false;
  private everConnected = false;
  private blocked = false;
  private generation = 0;
  private backoff = BACKOFF_MIN;
  private reconnectTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly spec: string,
    readonly opts: SyslogOptions,
  ) {
    if (opts.transport === 'udp') {
      this.udp = dgram.createSocket(net.isIPv6(opts.host) ? 'udp6' : 'udp4');
      // The kernel's ICMP answer comes here (recvmsg) or to the next send's callback, whichever reads it first.
      this.udp.on('error', (e) => this.udpError(e));
      this.udp.unref();
      this.connectUdp();
    } else {
      this.connect();
    }
  }

  private lose(reason: string, n = 1): void {
    this.losses.add(reason, n);
  }

  /** A delivery error: remembered as the reason, told once. */
  private problem(e: unknown): string {
    this.lastError = (e as Error)?.message ?? String(e);
    const why = netReason(e, this.opts.host, this.opts.port);
    this.reason = why;
    if (!this.noticed.has(why) && this.noticed.size < 16) {
      this.noticed.add(why);
      const then =
        this.opts.transport === 'tcp'
          ? `records wait in the queue (up to ${this.opts.queue}) while riff retries`
          : 'records are counted as not delivered while it lasts';
      this.onNotice?.(`--output ${this.spec}: ${why}; ${then}; start the syslog server or fix the address`);
    }
    return why;
  }

  private queueFull(): string {
    return this.reason ? `queue full (queue=${this.opts.queue}) while ${this.reason}` : `queue full (queue=${this.opts.queue})`;
  }

  write(rec: RecordData): void {
    if (this.closing) {
      this.lose('emitted after the output closed');
      return;
    }
    let frame = formatSyslog(rec, this.opts);
    if (this.opts.transport === 'udp') return this.sendUdp(frame);
    frame =
      this.opts.framing === 'lf'
        ? Buffer.concat([frame, Buffer.from('\n')])
        : Buffer.concat([Buffer.from(`${frame.length} `), frame]);
    if (this.queue.length >= this.opts.queue) {
      this.lose(this.queueFull());
      if (this.opts.drop === 'newest') return;
      this.queue.shift();
    }
    this.queue.push({ frame, at: 0, counted: false });
    this.pump();
  }

  private connectUdp(): void {
    this.udpState = 'connecting';
    // Node hands a failed lookup to this callback (its types say it takes nothing).
    const done = (err?: Error | null) => {
      if (this.closed) return;
      if (err) {
        this.udpState = 'down';
        this.udpRetryAt = Date.now() + UDP_RETRY;
        const why = this.problem(err);
        this.lose(why, this.udpWaiting.length);
        this.udpWaiting = [];
      } else {
        this.udpState = 'up';
        this.reason = null;
        for (const f of this.udpWaiting.splice(0)) this.sendUdp(f);
      }
      this.settle();
    };
    this.udp!.connect(this.opts.port, this.opts.host, done as () => void);
  }

  /** A UDP error, told once; one that says the address is unusable makes it so until the retry time. */
  private udpError(e: unknown): string {
    const why = this.problem(e);
    if (UDP_ADDRESS_ERRORS.has((e as NodeJS.ErrnoException)?.code ?? '')) this.udpRefusedUntil = Date.now() + UDP_RETRY;
    return why;
  }

  private sendUdp(frame: Buffer): void {
    if (this.udpState === 'down') {
      if (Date.now() < this.udpRetryAt) return this.lose(this.reason ?? 'destination unusable');
      this.connectUdp();
    }
    if (this.udpPending + this.udpWaiting.length >= this.opts.queue) return this.lose(this.queueFull());
    if (this.udpState === 'connecting') {
      this.udpWaiting.push(frame);
      return;
    }
    // The address answered "unusable" (the kernel hands the ICMP error to the
    // next send, so without this every other datagram would go out and count
    // as written): lost at once until the retry time, then one datagram probes.
    if (Date.now() < this.udpRefusedUntil) return this.lose(this.reason ?? 'destination unusable');
    this.udpPending++;
    this.udp!.send(frame, (err) => {
      this.udpPending--;
      if (err) {
        this.lose(this.udpError(err));
      } else if (Date.now() < this.udpRefusedUntil) {
        // Handed to the kernel after the refusal came back (a send after this one's was told it): lost.
        this.lose(this.reason ?? 'destination unusable');
      } else this.written++;
      this.settle();
    });
  }

  private connect(): void {
    this.reconnectTimer = null;
    if (this.closed) return;
    const gen = ++this.generation;
    const sock = net.connect({ host: this.opts.host, port: this.opts.port });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.unref();
    sock.on('connect', () => {
      if (gen !== this.generation) return;
      this.connected = true;
      this.everConnected = true;
      this.blocked = false;
      this.backoff = BACKOFF_MIN;
      this.lastError = null;
      this.reason = null;
      this.pump();
    });
    sock.on('drain', () => {
      if (gen !== this.generation) return;
      this.blocked = false;
      this.pump();
    });
    sock.on('data', () => {}); // a syslog server says nothing; keep reading so 'end' is seen
    sock.on('end', () => sock.destroy());
    sock.on('error', (e) => {
      if (gen === this.generation) this.problem(e);
    });
    sock.on('close', () => {
      if (gen !== this.generation) return;
      this.generation++;
      this.connected = false;
      this.blocked = false;
      this.sock = null;
      this.requeueInflight();
      if (this.closed) return;
      if (this.closing && !this.everConnected) {
        // Never reached in this run (nothing listening, unknown host): close()
        // gave it one more try and that failed too, so stop waiting. A server
        // that was reached before may be restarting: retry until the timeout.
        this.wake();
        return;
      }
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoff);
      this.reconnectTimer.unref();
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
      this.settle();
    });
  }

  /** After a broken connection: what the server may not have read goes back to the front of the queue. */
  private requeueInflight(): void {
    const now = Date.now();
    const again = this.inflight.filter((e) => e.at === 0 || (this.opts.resend > 0 && now - e.at < this.opts.resend));
    this.inflight = [];
    this.unconfirmed = 0;
    if (!again.length) return;
    for (const e of again) {
      if (e.counted) this.resent++;
      e.at = 0;
    }
    this.queue.unshiftAll(again);
    while (this.queue.length > this.opts.queue) {
      this.lose(this.queueFull());
      if (this.opts.drop === 'newest') this.queue.pop();
      else this.queue.shift();
    }
  }

  private prune(): void {
    const keep = this.opts.resend;
    const now = Date.now();
    let i = 0;
    // Written long enough ago, or more than the queue bound holds: forgotten.
    const excess = this.inflight.length - this.opts.queue;
    while (i < this.inflight.length && this.inflight[i].at !== 0 && (now - this.inflight[i].at >= keep || i < excess)) i++;
    if (i) this.inflight.splice(0, i);
  }

  private pump(): void {
    if (!this.connected || !this.sock) return;
    const sock = this.sock;
    const gen = this.generation;
    while (!this.blocked && this.queue.length) {
      const e = this.queue.shift()!;
      this.inflight.push(e);
      this.unconfirmed++;
      const ok = sock.write(e.frame, (err) => {
        if (gen !== this.generation || err) return;
        e.at = Date.now();
        this.unconfirmed--;
        if (!e.counted) {
          e.counted = true;
          this.written++;
        }
        this.prune();
        this.settle();
      });
      if (!ok) this.blocked = true;
    }
    this.prune();
  }

  private queued(): number {
    if (this.opts.transport === 'udp') return this.udpPending + this.udpWaiting.length;
    return this.queue.length + this.unconfirmed;
  }

  private settle(): void {
    if (this.queued() === 0) this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  flush(): void {
    this.pump();
  }

  private closePromise: Promise<void> | null = null;

  close(): Promise<void> {
    this.closePromise ??= this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    // A TCP connection that is down: try once more now instead of waiting for the backoff.
    if (this.opts.transport === 'tcp' && this.reconnectTimer && this.queued() > 0) {
      clearTimeout(this.reconnectTimer);
      this.connect();
    }
    this.pump();
    if (this.queued() > 0 && this.opts.timeout > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.opts.timeout);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const left = this.queued();
    this.lose(this.reason ?? `not delivered within timeout=${this.opts.timeout} ms at exit`, left);
    this.queue.clear();
    this.udpWaiting = [];
    if (this.udp) {
      const u = this.udp;
      await new Promise<void>((r) => u.close(() => r()));
      this.udpPending = 0;
    }
    const sock = this.sock;
    if (sock) {
      this.generation++;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          sock.destroy();
          resolve();
        }, 1000);
        sock.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        sock.end();
      });
    }
    this.sock = null;
    this.connected = false;
    this.inflight = [];
    this.unconfirmed = 0;
  }

  stats(): SyslogStats {
    return {
      written: this.written,
      dropped: this.losses.total,
      lost: this.losses.record(),
      queued: this.closed ? 0 : this.queued(),
      resent: this.resent,
      connected: this.opts.transport === 'udp' ? true : this.connected,
      lastError: this.lastError,
    };
  }
}
