// The outputs of a run as one: every record to each, behind one error path,
// and records decoded on their way there. Apart from the registry
// (output.ts), which loads every kind of output (and what they need: crypto,
// sockets), so that a run with the default text output loads none of them.
import path from 'node:path';
import { decodeRecord, type RecordData } from './records.js';
import { Losses, OutputFault, RecordRefused, errnoText, type OutputStats, type RecordOutput } from './types.js';

/**
 * Every output riff writes to, behind the one error path all outputs share:
 *
 * - A record an output cannot hold (RecordRefused) is counted under its
 *   reason; that output goes on.
 * - An output that cannot go on (OutputFault, or any other error it throws)
 *   has failed: onFault hears its one line once, it takes no more records,
 *   and every record it misses from then on is counted under the fault's
 *   reason. The other outputs go on getting every record.
 * - Nothing here throws; close() and stats() give every output's account.
 */
export class OutputSet {
  emitted = 0;
  private readonly failed = new Map<RecordOutput, string>();
  private readonly missed = new Map<RecordOutput, Losses>();
  onFault: (line: string) => void = () => {};

  constructor(readonly outputs: RecordOutput[]) {
    for (const o of outputs) {
      this.missed.set(o, new Losses());
      o.onAsyncFault = (e) => this.fault(o, e, 0);
    }
  }

  get anyFailed(): boolean {
    return this.failed.size > 0;
  }

  write(rec: RecordData): void {
    this.emitted++;
    for (const o of this.outputs) this.guard(o, () => o.write(rec), 1);
  }

  /** A record that could not be decoded (a riff bug): every output misses it. */
  undecodable(e: unknown): void {
    this.emitted++;
    for (const o of this.outputs) this.missed.get(o)!.add(`could not be decoded (${(e as Error).message})`);
  }

  flush(): void {
    for (const o of this.outputs) this.guard(o, () => o.flush(), 0);
  }
  /**
   * Every output is reopened even if one fails; each failure goes to
   * `failed`. Returns how many opened a new file.
   */
  reopen(failed: (e: unknown) => void): number {
    let n = 0;
    for (const o of this.outputs) {
      try {
        if (o.reopen?.()) n++;
      } catch (e) {
        failed(e);
      }
    }
    return n;
  }
  async close(): Promise<void> {
    await Promise.all(
      this.outputs.map(async (o) => {
        try {
          await o.close();
        } catch (e) {
          this.fault(o, e, 0);
        }
      }),
    );
  }

  private guard(o: RecordOutput, f: () => void, records: number): void {
    const why = this.failed.get(o);
    if (why !== undefined) {
      this.missed.get(o)!.add(why, records);
      return;
    }
    try {
      f();
    } catch (e) {
      if (e instanceof RecordRefused) return;
      this.fault(o, e, records);
    }
  }

  private fault(o: RecordOutput, e: unknown, records: number): void {
    if (this.failed.has(o)) return;
    if (e instanceof OutputFault) {
      this.failed.set(o, e.reason);
      this.onFault(e.message);
      return;
    }
    // Not one of the outputs' own faults: the same path, and the record it was writing is lost.
    const what = errnoText(e);
    const why = what;
    this.failed.set(o, why);
    this.missed.get(o)!.add(why, records);
    const errno = typeof (e as NodeJS.ErrnoException)?.code === 'string';
    this.onFault(
      `--output ${o.spec}: ${what}; it takes no more records` +
        (errno ? '; free space, fix the device or send records elsewhere' : ' (a riff bug: please report it, with RIFF_DEBUG=1)'),
    );
    if (!errno && process.env.RIFF_DEBUG) this.onFault(String((e as Error)?.stack));
  }

  /** Each output's account, with the records it missed after failing. */
  stats(): { spec: string; stats: OutputStats; failed: boolean }[] {
    return this.outputs.map((o) => {
      const s = o.stats();
      const m = this.missed.get(o)!;
      const lost = { ...s.lost };
      for (const [k, v] of Object.entries(m.record())) lost[k] = (lost[k] ?? 0) + v;
      return { spec: o.spec, stats: { ...s, dropped: s.dropped + m.total, lost }, failed: this.failed.has(o) };
    });
  }
}

/**
 * config.lua's outputs name files beside config.lua, as require and riff.read
 * do: a relative json:FILE or sqlite:FILE is made absolute against `dir`.
 */
export function resolveSpec(spec: string, dir: string): string {
  const m = /^(json|sqlite):(.+)$/.exec(spec);
  if (!m || m[2] === '-' || path.isAbsolute(m[2])) return spec;
  return `${m[1]}:${path.join(dir, m[2])}`;
}

/**
 * The RuntimeOptions.record callback (or a worker message handler): decode
 * each record and write it out. `now` (ms) is when the record left Lua, for
 * records emitted outside a packet; by default the time of the call.
 */
export function recordSink(out: OutputSet | RecordOutput): (bytes: Uint8Array, now?: number) => void {
  if (!(out instanceof OutputSet)) return (bytes, now) => out.write(decodeRecord(bytes, now));
  return (bytes, now) => {
    let rec: RecordData;
    try {
      rec = decodeRecord(bytes, now);
    } catch (e) {
      return out.undecodable(e);
    }
    out.write(rec);
  };
}
