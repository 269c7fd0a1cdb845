// What the outputs share with each other and with the registry (output.ts):
// the RecordOutput interface, its stats, how losses are counted, and the
// errors an output throws. Both sides import this module, so the outputs
// never import the registry that opens them.
import fs from 'node:fs';
import type { RecordData } from './records.js';

export interface OutputStats {
  /** Records accepted and written (for syslog: handed to the network). */
  written: number;
  /** Records lost: refused, queue overflow, send errors, left over at close, after a fault. */
  dropped: number;
  /** Records waiting: buffered lines, uncommitted rows, queued messages. */
  queued: number;
  /** Why they were lost: reason -> count (the counts add up to dropped). */
  lost: Record<string, number>;
}

export interface RecordOutput {
  /** The --output spec this came from, for messages. */
  readonly spec: string;
  /**
   * Throws RecordRefused for a record this output cannot hold (counted, the
   * output goes on) or OutputFault when the output cannot go on; either way
   * the output has already counted what it lost.
   */
  write(rec: RecordData): void;
  /** Push buffered records out now (best effort for network outputs). */
  flush(): void;
  /** Flush and release; network outputs wait (bounded) for their queue to drain. */
  close(): Promise<void> | void;
  stats(): OutputStats;
  /** Network outputs: settles once the first connection attempt is over; rejects on settings the server refused. */
  ready?(): Promise<void>;
  /** Network outputs: called with a one-line note when delivery runs into a problem (once per kind). */
  onNotice?: ((line: string) => void) | null;
  /** Set by OutputSet: where a fault found by a timer (not by a call) goes. */
  onAsyncFault?: ((e: unknown) => void) | null;
  /**
   * SIGUSR1 (logrotate): a file output flushes and, when its file was moved
   * or removed, opens its path anew (true); a file still at its path is
   * kept (false). Absent where there is nothing to reopen (stdout, SQLite,
   * syslog).
   */
  reopen?(): boolean;
}

/** Records lost, by reason. */
export class Losses {
  private readonly m = new Map<string, number>();
  total = 0;
  add(reason: string, n = 1): void {
    if (n <= 0) return;
    // Reasons may carry details (a database's message): keep the summary bounded.
    if (!this.m.has(reason) && this.m.size >= 16) reason = 'other reasons';
    this.m.set(reason, (this.m.get(reason) ?? 0) + n);
    this.total += n;
  }
  record(): Record<string, number> {
    return Object.fromEntries(this.m);
  }
}

/** The loss reason when the reader of stdout went away (riff | head): counted, but the reader's choice, not a fault. */
export const STDOUT_CLOSED = 'standard output was closed';
/** The loss reason when stdout's reader took too little while riff was stopping (src/outputs/fd-sink.ts FdWriter): not a fault either. */
export const STDOUT_STALLED = "standard output's reader took less than 16 KiB in a second after riff was told to stop";
/** The same for a FIFO named by json:FILE. */
export const READER_STALLED = 'its reader took less than 16 KiB in a second after riff was told to stop';
/** Losses that are the reader's choice, not riff's fault (the exit code ignores them). */
export const READERS_CHOICE = [STDOUT_CLOSED, STDOUT_STALLED, READER_STALLED];

/** One record this output cannot hold; the output counted it and carries on. */
export class RecordRefused extends Error {}

/**
 * The output cannot go on (disk full, device error, damaged database). The
 * message is one line naming the output and what to do; the output counted
 * the records it lost before throwing.
 */
export class OutputFault extends Error {
  constructor(
    message: string,
    /** Short reason the records refused from now on are counted under. */
    readonly reason: string,
  ) {
    super(message);
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  EIO: 'I/O error',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EBADF: 'file closed under riff',
  EPIPE: 'the reader closed it',
  ENXIO: 'device gone',
  ENODEV: 'device gone',
  // Creating a file (-w, an output's file)
  ENOENT: 'no such directory',
  EISDIR: 'is a directory',
  ENOTDIR: 'a parent is not a directory',
};

/** What an errno error means to a user, e.g. "disk full (ENOSPC)". */
export function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code && ERRNO_TEXT[code]) return `${ERRNO_TEXT[code]} (${code})`;
  const msg = String((e as Error)?.message ?? e).split('\n')[0];
  return code && !msg.includes(code) ? `${msg} (${code})` : msg;
}


/** A one-line error naming the spec and what to do. */
export class OutputSpecError extends Error {}

export function specError(spec: string, what: string): OutputSpecError {
  return new OutputSpecError(`--output ${spec}: ${what}`);
}

/** `name` still names the file open at `fd` (same device and inode): nobody moved or removed it. */
export function stillNames(name: string, fd: number): boolean {
  try {
    const a = fs.statSync(name, { bigint: true });
    const b = fs.fstatSync(fd, { bigint: true });
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}
