// Synchronous, byte-exact writes to a file descriptor (stdout, stderr). riff
// writes whole buffers as the Lua side flushes them, so order is the order
// of the packets. A closed reader (`riff ... | head -1`) is not an error: the
// sink notes it and riff winds down quietly. Other errors are thrown with
// bytesWritten: how much of this buffer went out before the error.
import fs from 'node:fs';

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** At most this much per write(2): a reader taking 16 KiB a second is reading. */
const PIECE = 16 << 10;

export class FdSink {
  closed = false;
  bytes = 0;
  onClose: (() => void) | null = null;
  /** Called after every write that took bytes (the watchdog's sign that output moves). */
  onMove: (() => void) | null = null;
  /**
   * How long a full pipe may take no bytes before the sink gives up (0:
   * wait for the reader as long as it takes). Set once riff has been told
   * to stop: a reader that stopped reading must not hold riff past SIGTERM.
   */
  stallMs = 0;
  /** The reader took nothing for stallMs: what came after is counted, not written. */
  gaveUp = false;
  unwritten = 0;

  constructor(readonly fd: number) {}

  write(buf: Uint8Array): void {
    if (this.closed) {
      if (this.gaveUp) this.unwritten += buf.length;
      return;
    }
    let off = 0;
    let stalled = 0;
    while (off < buf.length) {
      try {
        // In pieces: a blocking pipe's write returns only once all of it is
        // taken, and each piece taken is a sign the reader reads (onMove).
        off += fs.writeSync(this.fd, buf, off, Math.min(buf.length - off, PIECE));
        stalled = 0;
        this.onMove?.();
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          // A non-blocking pipe is full: wait for the reader instead of dropping output.
          if (!stalled) stalled = Date.now();
          else if (this.stallMs && Date.now() - stalled > this.stallMs) {
            this.unwritten += buf.length - off;
            this.closed = this.gaveUp = true;
            return;
          }
          Atomics.wait(sleeper, 0, 0, 1);
          continue;
        }
        if (code === 'EPIPE' || code === 'EBADF' || code === 'ECONNRESET') {
          this.closed = true;
          this.onClose?.();
          return;
        }
        // The caller may keep what went out whole (e.g. cut a file back to its last whole line).
        (e as { bytesWritten?: number }).bytesWritten = off;
        throw e;
      }
    }
    this.bytes += buf.length;
  }

  text(s: string): void {
    this.write(Buffer.from(s, 'utf8'));
  }
}

export const stdout = new FdSink(1);
export const stderr = new FdSink(2);

/**
 * process.stdout or process.stderr when it is a terminal, else null. riff
 * writes through fs (FdSink), so it creates neither stream unless the
 * descriptor may be a terminal: only a character device can be one, and
 * the stream for a pipe loads Node's net module, a few ms of every start
 * (README, Start-up).
 */
export function terminal(fd: 1 | 2): NodeJS.WriteStream | null {
  try {
    if (!fs.fstatSync(fd).isCharacterDevice()) return null;
  } catch {
    return null; // closed: process.stdout would be a stream to nowhere
  }
  const stream = fd === 1 ? process.stdout : process.stderr;
  return stream.isTTY ? stream : null;
}
