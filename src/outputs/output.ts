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
//   mysql://USER:PASS@HOST:PORT/DB[?opts]  a table per record type in MariaDB/MySQL,
//                                   rows keyed by (sensor, run, seq); mariadb:// too
//
// syslog options (after '?', joined by '&'): format=5424|3164,
// facility=NAME|0-23 (default user), severity=NAME|0-7 (default info),
// app=NAME (default riff), hostname=NAME (default this host's),
// msg=json|sd (default json), queue=N (default 10000), drop=oldest|newest,
// framing=octet|lf (TCP only), timeout=MS (how long close waits to drain,
// default 5000), resend=MS (TCP: after a broken connection, resend what was
// written that recently; default 1000, 0 = never).
import { TextOutput } from './text-output.js';
import { JsonOutput } from './json-output.js';
import { SqliteOutput } from './sqlite-output.js';
import { SyslogOutput, parseSyslogSpec } from './syslog-output.js';
import { MysqlOutput, parseMysqlSpec } from './mysql-output.js';
import { specError, type RecordOutput } from './types.js';
import { OutputSet } from './output-set.js';

// The shared types and errors, and the set of outputs, for the modules that open outputs through this one.
export * from './types.js';
export * from './output-set.js';

/** What outputs need to know about this riff. */
export interface OutputContext {
  /** --sensor: names this riff in shared databases (default: the host name). */
  sensor?: string;
}

const KINDS = 'json:-, json:FILE, sqlite:FILE, syslog:udp://HOST:PORT, syslog:tcp://HOST:PORT or mysql://USER:PASS@HOST:PORT/DB';

/** Open one output from an --output spec. Throws OutputSpecError (one line) on a bad spec. */
export function openOutput(spec: string, ctx: OutputContext = {}): RecordOutput {
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
    case 'mysql':
    case 'mariadb': {
      return new MysqlOutput(spec, parseMysqlSpec(spec), ctx.sensor);
    }
    default:
      throw specError(spec, `unknown output kind '${kind}'; use ${KINDS}`);
  }
}

/** Open every spec (none: the text output). Outputs opened before a bad spec are closed again. */
export async function openOutputs(specs: readonly string[], ctx: OutputContext = {}): Promise<OutputSet> {
  if (!specs.length) return new OutputSet([openOutput('text:-')]);
  const outs: RecordOutput[] = [];
  try {
    for (const s of specs) outs.push(openOutput(s, ctx));
    await Promise.all(outs.map((o) => o.ready?.()));
  } catch (e) {
    await Promise.all(outs.map((o) => o.close()));
    throw e;
  }
  return new OutputSet(outs);
}

