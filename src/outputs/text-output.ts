// The default output (no --output, or text:-): one line per record on stdout,
//
//   dns qname=example.com qtype=1 answers=[93.184.216.34] flags={qr=true rd=true}
//
// Byte strings print as text when they are valid UTF-8; other bytes as \xHH
// (and a backslash as \\). A value with a space, '"', '=' or a control
// character is double-quoted, with \" \n \t \r and \xHH inside. Integers
// print as digits, floats as Lua prints them (3.0, 0.5). Lines are written
// as records arrive.
import { FdSink, stdout } from './fd-sink.js';
import { escapeBytes, floatText, type RecordData, type Value } from './records.js';
import { Losses, STDOUT_CLOSED, STDOUT_STALLED, type OutputStats, type RecordOutput } from './types.js';

function quote(s: string): string {
  if (s !== '' && !/[\s"=\x00-\x1f\x7f{}\[\],]/.test(s)) return s;
  return (
    '"' +
    s.replace(/["\x00-\x1f\x7f]/g, (c) =>
      c === '"' ? '\\"' : c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\r' ? '\\r' : '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'),
    ) +
    '"'
  );
}

export function textValue(v: Value): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return Number.isFinite(v) ? floatText(v) : String(v).replace('Infinity', 'inf').toLowerCase();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Buffer.isBuffer(v)) return quote(escapeBytes(v));
  if (Array.isArray(v)) return '[' + v.map(textValue).join(' ') + ']';
  return '{' + Object.keys(v).map((k) => `${quote(k)}=${textValue(v[k])}`).join(' ') + '}';
}

export function textLine(rec: RecordData): string {
  let line = rec.type;
  for (const k of Object.keys(rec.fields)) line += ` ${quote(k)}=${textValue(rec.fields[k])}`;
  return line + '\n';
}

export class TextOutput implements RecordOutput {
  private written = 0;
  private readonly losses = new Losses();
  constructor(
    readonly spec = 'text:-',
    private readonly sink: FdSink = stdout,
  ) {}
  write(rec: RecordData): void {
    const line = Buffer.from(textLine(rec), 'utf8');
    if (this.sink.write(line) === line.length) this.written++;
    else this.losses.add(this.sink.gaveUp ? STDOUT_STALLED : STDOUT_CLOSED);
  }
  flush(): void {}
  close(): void {}
  stats(): OutputStats {
    return { written: this.written, dropped: this.losses.total, queued: 0, lost: this.losses.record() };
  }
}
