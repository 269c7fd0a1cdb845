// Signals, heard from riff's first moment: src/riff.ts imports this before
// anything else, so a signal that comes while the workers boot or the
// command line is parsed is kept and acted on as soon as the run can,
// instead of killing riff without a summary. README: Signals.
//
//   SIGINT, SIGTERM  stop: the capture ends, queued packets are skipped,
//                    deinit runs, the summary is printed (exit 0). A second
//                    one exits 130 at once, saying in one line what it abandons.
//   SIGHUP           reload the script and config.lua (src/vm/pool.ts reload()).
//   SIGUSR1          reopen -w and json:FILE outputs (logrotate).
let heard = 0;
/** Of those, SIGTERMs. */
let heardTerm = 0;
let first: 'SIGINT' | 'SIGTERM' | null = null;
let listener: ((sig: 'SIGINT' | 'SIGTERM') => void) | null = null;
// How to leave at once: process.exit() until the command line gives one that
// does not wait for the workers' threads (one blocked writing to a reader
// that stopped reading would never be joined).
let leave: (code: number) => void = (code) => process.exit(code);
/** What a second interrupt abandons, for its one line. */
let abandons: (() => string) | null = null;
const early = { hup: false, usr1: false };
let onHup: (() => void) | null = null;
let onUsr1: (() => void) | null = null;

function onSignal(sig: 'SIGINT' | 'SIGTERM'): void {
  heard++;
  if (sig === 'SIGTERM') heardTerm++;
  // A second one: the user wants out now.
  if (heard > 1) {
    // Always one line: before the run is up there is only its start to abandon.
    const what = abandons?.() ?? 'the run, which was still starting';
    process.stderr.write(`riff: second interrupt: exiting now, abandoning ${what}\n`);
    leave(130);
  }
  first ??= sig;
  listener?.(sig);
}

process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));
// Without a listener SIGHUP would end riff (exit 129) and SIGUSR1 would
// start Node's inspector; before the run is up they are kept for it.
process.on('SIGHUP', () => (onHup ? onHup() : (early.hup = true)));
process.on('SIGUSR1', () => (onUsr1 ? onUsr1() : (early.usr1 = true)));

/** How to exit at once (a second interrupt). */
export function leaveWith(fn: (code: number) => void): void {
  leave = fn;
}

/** Call `fn` on SIGINT/SIGTERM with the first one's name; at once if one came already. */
export function whenSignalled(fn: (sig: 'SIGINT' | 'SIGTERM') => void): void {
  listener = fn;
  if (first) fn(first);
}

export function signalled(): boolean {
  return heard > 0;
}

/** How many SIGINTs and SIGTERMs riff's handlers have acted on. */
export function interruptsHeard(): [number, number] {
  return [heard - heardTerm, heardTerm];
}

/** SIGHUP (reload) and SIGUSR1 (reopen): one that came before the run was up is acted on now. */
export function whenReload(fn: () => void): void {
  onHup = fn;
  if (early.hup) {
    early.hup = false;
    fn();
  }
}

export function whenReopen(fn: () => void): void {
  onUsr1 = fn;
  if (early.usr1) {
    early.usr1 = false;
    fn();
  }
}

export function onSecondInterrupt(fn: () => string): void {
  abandons = fn;
}
