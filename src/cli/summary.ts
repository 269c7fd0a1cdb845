// The summary riff prints on stderr at the end, and the exit code: every
// packet read is accounted for (passed, dropped at the ring, processed, lost
// with a worker, not processed), then every record and every -w packet.
import { tooLarge, type CaptureFileError } from '../capture/file.js';
import type { LiveStats } from '../capture/live.js';
import type { PcapWriter } from '../outputs/pcap-writer.js';
import { READERS_CHOICE } from '../outputs/types.js';
import type { OutputSet } from '../outputs/output-set.js';
import { stderr, stdout } from '../outputs/fd-sink.js';
import type { LuaPool } from '../vm/pool.js';
import { kernelLines } from '../tcpdump-flags.js';
import { note, type Args } from './args.js';

/** Counted on the capture thread; what Lua did comes from the workers. */
export interface Counters {
  read: number;
  passed: number;
}

/** What the run left to account for. */
export interface RunEnd {
  args: Args;
  counters: Counters;
  pool: LuaPool;
  s: Awaited<ReturnType<LuaPool['finish']>>;
  outputs: OutputSet;
  kernel: LiveStats | null;
  loopback: boolean;
  skipped: number;
  reopens: number;
  writer: PcapWriter | null;
  writerFailed: boolean;
  writerMissed: number;
  outputFailed: boolean;
  liveFailure: string | null;
  interrupted: boolean;
  readerGone: boolean;
  endOfInput: boolean;
  damage: CaptureFileError | null;
  named: (msg: string) => string;
}

/** Print the summary; returns riff's exit code. */
export function summarize(end: RunEnd): number {
  const { args, counters, pool, s, outputs, kernel, loopback, skipped, reopens, writer, writerFailed, writerMissed, outputFailed, liveFailure, interrupted, readerGone, endOfInput, damage, named } = end;
  // passed = dropped + processed + packets that ended in an error (+ any left when --strict stopped)
  const lines = [
    `${counters.read} packets ${args.r !== undefined ? 'read' : 'captured'}`,
    `${counters.passed} packets passed the filter`,
  ];
  if (kernel) lines.splice(1, 0, ...kernelLines(kernel, counters.read, loopback));
  // Said, not failed: a reader that stops reading (riff | head) chose to.
  // (Only when it cut the run short: after the whole file, nothing was left unread.)
  if (readerGone && !interrupted && (args.r === undefined || (!endOfInput && !damage)))
    lines.push(`stopped early: standard output's reader went away${args.r !== undefined ? '; the rest of the input was not read' : ''}`);
  if (stdout.gaveUp)
    lines.push(`${stdout.unwritten} bytes of output not written, besides what the ended workers held: standard output's reader took none for a second after riff was told to stop`);
  if (args.i !== undefined) lines.push(`${pool.dropped} packets dropped at the ring (Lua could not keep up)`);
  if (pool.unheard) lines.push(`${pool.unheard} overheard copies dropped at the ring (packets on the script's overhear ports, such as DNS answers, that a worker besides their flow's did not get)`);
  lines.push(
    `${s.processed - s.packetErrors} packets processed by Lua`,
    // Errors outside packets (setup, deinit, report, __gc, overhear) are said apart:
    // only packets' errors take part in the packet accounting.
    `${s.errors} Lua errors${s.errors ? ` (${[...s.byScript].map(([k, v]) => `${k}: ${v}`).join(', ')}${s.errors > s.packetErrors ? `; ${s.errors - s.packetErrors} of them outside packets: setup, deinit, report, __gc, overhear` : ''})` : ''}`,
  );
  if (skipped) lines.push(tooLarge(skipped, pool.maxRecord));
  if (pool.reloads) lines.push(`${pool.reloads} reload${pool.reloads > 1 ? 's' : ''} (SIGHUP): the counts above are over all ${pool.reloads + 1} generations of the script`);
  if (reopens) lines.push(`${reopens} reopen${reopens > 1 ? 's' : ''} of the output files (SIGUSR1)`);
  if (pool.ended)
    lines.push(`${pool.lost} packets lost with ${pool.ended} Lua worker${pool.ended > 1 ? 's' : ''} ended (over --lua-timeout, or died); ${pool.restarted} restarted`);
  // passed = processed + errors + dropped + lost (+ not processed)
  const unprocessed = counters.passed - pool.dropped - pool.lost - s.processed;
  if (unprocessed > 0) lines.push(`${unprocessed} packets not processed (stopped early)`);
  // Records: how many Lua emitted, then each output's own account (with
  // several outputs a record is written once per output).
  const accounts = outputs.stats();
  if (outputs.emitted || accounts.some((a) => a.stats.written || a.stats.dropped)) {
    lines.push(`${outputs.emitted} records emitted`);
    for (const { spec, stats: st } of accounts) {
      const lost = Object.entries(st.lost).map(([why, n]) => `${n} not written: ${why}`);
      lines.push(`output ${spec}: ${[`${st.written} written`, ...lost].join(', ')}`);
    }
  }
  // A reader that went away (riff | head) chose to stop: counted above, not a failure.
  const recordsLost = accounts.some((a) => a.stats.dropped > READERS_CHOICE.reduce((n, why) => n + (a.stats.lost[why] ?? 0), 0));
  if (args.verbose) lines.push(`peak memory ${(process.resourceUsage().maxRSS / 1024).toFixed(1)} MiB resident`);
  const w = writer as PcapWriter | null;
  if (w) {
    const lost = w.lost + writerMissed;
    const to = args.w === '-' ? 'standard output' : new Set(w.files).size > 1 ? `${new Set(w.files).size} files (${w.files[0]} ... ${w.current})` : w.current || args.w;
    lines.push(`${w.written} packets written to ${to}${w.skipped ? `, ${w.skipped} not written (link type differs from the file's)` : ''}${w.left ? `, ${w.left} not written (-W ${args.W}: the last -G file had ended)` : ''}${lost ? `, ${lost} not written: ${w.failure}` : ''}`);
  } else if (writerFailed) lines.push(`0 packets written to ${args.w}${writerMissed ? `, ${writerMissed} not written` : ''}`);
  stderr.text(lines.join('\n') + '\n');
  if (liveFailure) {
    // The interface went away or failed: the summary above still counts what came before.
    note(liveFailure);
    return 1;
  }
  const failed = outputFailed || recordsLost;
  if (interrupted) return failed ? 1 : 0;
  if (damage) {
    note(`${named(damage.message)}${damage.unreadable ? '' : ` at byte offset ${damage.offset}`}; ${counters.read} packets before it were processed`);
    return 1;
  }
  if (failed) return 1;
  if (args.strict && (s.errors > 0 || pool.ended > 0)) return 1;
  // A worker lost for good (its setup hung, or it could not be restarted): the run did not do its job.
  if (pool.ended > pool.restarted) return 1;
  return 0;
}
