// SIGINT and SIGTERM, heard from riff's first moment: src/riff.ts imports
// this before anything else, so a signal that comes while the workers boot
// or the command line is parsed is kept and acted on (stop, then the
// summary) as soon as the run can, instead of killing riff without one.
let heard = 0;
let listener: (() => void) | null = null;

function onSignal(): void {
  heard++;
  // A second one: the user wants out now.
  if (heard > 1) process.exit(130);
  listener?.();
}

process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

/** Call `fn` on SIGINT/SIGTERM; at once if one came already. */
export function whenSignalled(fn: () => void): void {
  listener = fn;
  if (heard) fn();
}

export function signalled(): boolean {
  return heard > 0;
}
