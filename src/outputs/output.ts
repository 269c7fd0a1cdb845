// Where riff.emit's records go: one interface, one module per kind, and the
// parser for --output specs.
//
//   (none)                          text to stdout: "type key=value ..." lines
//   text:-                          the same, named
//   json:-                          JSON lines to stdout
//   json:FILE                       JSON lines appended to FILE
//   sqlite:FILE                     one table per record type in FILE (appends)
//   syslog:udp://HOST:PORT[?opts]   RFC 5424 (or 3164) messages, one per datagram
//   syslog:tcp://HOST:PORT[?opts]   the same over TCP, RFC 6587 octet counting
//
// syslog options (after '?', joined by '&'): format=5424|3164,
// facility=NAME|0-23 (default user), severity=NAME|0-7 (default info),
// app=NAME (default riff), hostname=NAME (default this host's),
// msg=json|sd (default json), queue=N (default 10000), drop=oldest|newest,
// framing=octet|lf (TCP only), timeout=MS (how long close waits to drain,
// default 5000), resend=MS (TCP: after a broken connection, resend what was
// written that recently; default 1000, 0 = never).
import { decodeRecord, type RecordData } from './records.js';
import { TextOutput } from './text-output.js';
import { JsonOutput } from './json-output.js';
import { SqliteOutput } from './sqlite-output.js';
import { SyslogOutput, parseSyslogSpec } from './syslog-output.js';

export interface OutputStats {
  /** Records accepted and written (for syslog: handed to the network). */
  written: number;
  /** Records lost: queue overflow, send errors, left over at close. */
  dropped: number;
  /** Records waiting: buffered lines, uncommitted rows, queued messages. */
  queued: number;
}

export interface RecordOutput {
  /** The --output spec this came from, for messages. */
  readonly spec: string;
  write(rec: RecordData): void;
  /** Push buffered records out now (best effort for network outputs). */
  flush(): void;
  /** Flush and release; network outputs wait (bounded) for their queue to drain. */
  close(): Promise<void> | void;
  stats(): OutputStats;
  /**
   * SIGUSR1 (logrotate): a file output flushes and opens its path anew.
   * Absent where there is nothing to reopen (stdout, SQLite, syslog).
   */
  reopen?(): void;
}

const KINDS = 'json:-, json:FILE, sqlite:FILE, syslog:udp://HOST:PORT or syslog:tcp://HOST:PORT';

/** A one-line error naming the spec and what to do. */
export class OutputSpecError extends Error {}

export function specError(spec: string, what: string): OutputSpecError {
  return new OutputSpecError(`--output ${spec}: ${what}`);
}

/** Open one output from an --output spec. Throws OutputSpecError (one line) on a bad spec. */
export function openOutput(spec: string): RecordOutput {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? '' : spec.slice(colon + 1);
  switch (kind) {
    case 'text': {
      if (rest !== '' && rest !== '-') throw specError(spec, 'text output goes to stdout only; use text:- (or json:FILE for a file)');
      return new TextOutput(spec);
    }
    case 'json': {
      if (!rest) throw specError(spec, 'name a file (json:/path/records.jsonl) or - for stdout (json:-)');
      return new JsonOutput(spec, rest);
    }
    case 'sqlite': {
      if (!rest) throw specError(spec, 'name a database file, e.g. sqlite:riff.db');
      return new SqliteOutput(spec, rest);
    }
    case 'syslog': {
      return new SyslogOutput(spec, parseSyslogSpec(spec, rest));
    }
    default:
      throw specError(spec, `unknown output kind '${kind}'; use ${KINDS}`);
  }
}

/** Several outputs as one: every record goes to each. */
export class FanOut implements RecordOutput {
  readonly spec: string;
  constructor(readonly outputs: RecordOutput[]) {
    this.spec = outputs.map((o) => o.spec).join(' ');
  }
  /** Every output gets the record even if one fails; the first failure is rethrown. */
  write(rec: RecordData): void {
    let err: unknown = null;
    for (const o of this.outputs) {
      try {
        o.write(rec);
      } catch (e) {
        err ??= e;
      }
    }
    if (err) throw err;
  }
  flush(): void {
    for (const o of this.outputs) o.flush();
  }
  /** Every output is reopened even if one fails; the first failure is rethrown. */
  reopen(): void {
    let err: unknown = null;
    for (const o of this.outputs) {
      try {
        o.reopen?.();
      } catch (e) {
        err ??= e;
      }
    }
    if (err) throw err;
  }
  async close(): Promise<void> {
    await Promise.all(this.outputs.map((o) => o.close()));
  }
  stats(): OutputStats {
    const s = { written: 0, dropped: 0, queued: 0 };
    for (const o of this.outputs) {
      const x = o.stats();
      s.written += x.written;
      s.dropped += x.dropped;
      s.queued += x.queued;
    }
    return s;
  }
}

/** Open every spec (none: the text output). Outputs opened before a bad spec are closed again. */
export async function openOutputs(specs: readonly string[]): Promise<RecordOutput> {
  if (!specs.length) return openOutput('text:-');
  const outs: RecordOutput[] = [];
  try {
    for (const s of specs) outs.push(openOutput(s));
  } catch (e) {
    await Promise.all(outs.map((o) => o.close()));
    throw e;
  }
  return outs.length === 1 ? outs[0] : new FanOut(outs);
}

/**
 * The RuntimeOptions.record callback (or a worker message handler): decode
 * each record and write it out. `now` (ms) is when the record left Lua, for
 * records emitted outside a packet; by default the time of the call.
 */
export function recordSink(out: RecordOutput): (bytes: Uint8Array, now?: number) => void {
  return (bytes, now) => out.write(decodeRecord(bytes, now));
}
