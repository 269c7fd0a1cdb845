// Offline capture reader: `riff -r FILE` and `riff -r -`. The container is
// told apart by its first four bytes; pcap.ts and pcapng.ts decode records
// straight from the shared read buffer (reader.ts) into a Batch. Semantics follow
// libpcap's savefile readers (sf-pcap.c, sf-pcapng.c), so a file tcpdump reads
// gives the same packets here, and a file it rejects is rejected here too —
// except where noted in those modules.

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { PcapFile, isPcapMagic } from './pcap.js';
import { PcapngFile, PCAPNG_MAGIC } from './pcapng.js';
import { CaptureFileError, Source, WouldBlock, openErrorText, type CaptureFile } from './reader.js';

// The shared pieces, for the modules that open a capture through this one.
export { CaptureFileError, WouldBlock, tooLarge, plural, type CaptureFile } from './reader.js';

/** tty.isatty, required only for standard input: node:tty (and node:net, which it loads) is a few ms of every start. */
const isTerminal = (fd: number): boolean => (createRequire(import.meta.url)('node:tty') as typeof import('node:tty')).isatty(fd);

export interface OpenOptions {
  /** Records with more captured bytes than this are skipped and counted (default: none are). */
  maxRecord?: number;
}

/**
 * Open a pcap or pcapng file; '-' reads standard input. Pipes, FIFOs and
 * sockets are opened and read asynchronously, so the thread keeps hearing
 * signals while their writer is idle; everything else (regular files,
 * devices such as /dev/null, which Node's streams cannot take) is read
 * synchronously: fast, and never waited on.
 */
export async function openCaptureFileAsync(path: string, opts: OpenOptions = {}): Promise<CaptureFile> {
  let stream = false;
  try {
    const st = path === '-' ? fs.fstatSync(0) : fs.statSync(path);
    stream = st.isFIFO() || st.isSocket();
  } catch {
    // openCaptureFile says what is wrong with it
  }
  if (!stream) return openCaptureFile(path, opts);
  const stdin = path === '-';
  const name = stdin ? 'standard input' : path;
  if (stdin && isTerminal(0)) throw new CaptureFileError('standard input is a terminal; pipe a pcap or pcapng capture file into it', 0, true);
  let fd = 0;
  if (!stdin) {
    try {
      // A FIFO's open would wait for its writer; non-blocking, the wait is
      // the event loop's (the socket below sees no data until one writes).
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      throw new CaptureFileError(`${path}: cannot open it: ${openErrorText(e)}`, 0, true);
    }
  }
  const src = new Source(fd, name, !stdin, true);
  for (;;) {
    try {
      return detect(path, src, opts);
    } catch (e) {
      if (!(e instanceof WouldBlock)) {
        src.close();
        throw e;
      }
      src.pos = 0;
      await src.more();
    }
  }
}

/** Open a pcap or pcapng file, read synchronously; '-' reads standard input. */
export function openCaptureFile(path: string, opts: OpenOptions = {}): CaptureFile {
  const stdin = path === '-';
  const name = stdin ? 'standard input' : path;
  let fd: number;
  if (stdin) {
    // libpcap would sit waiting for keystrokes; say what was meant instead.
    if (isTerminal(0)) throw new CaptureFileError('standard input is a terminal; pipe a pcap or pcapng capture file into it', 0, true);
    fd = 0;
  } else {
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new CaptureFileError(`${path}: cannot open it: ${openErrorText(e)}`, 0, true);
    }
  }
  const src = new Source(fd, name, !stdin);
  try {
    return detect(path, src, opts);
  } catch (e) {
    src.close();
    throw e;
  }
}

function detect(path: string, src: Source, opts: OpenOptions): CaptureFile {
  const name = src.name;
  {
    const got = src.need(4);
    if (got === 0) throw new CaptureFileError(`${name}: empty file; expected a pcap or pcapng capture file`, 0);
    if (got < 4) throw new CaptureFileError(`${name}: only ${got} bytes, too short for a pcap or pcapng header`, 0);
    const magic = src.view.getUint32(0, false);
    const maxRecord = opts.maxRecord ?? Infinity;
    if (magic === PCAPNG_MAGIC) return new PcapngFile(path, src, maxRecord);
    if (isPcapMagic(magic)) return new PcapFile(path, src, maxRecord);
    const hex = magic.toString(16).padStart(8, '0');
    const hint = (magic >>> 16) === 0x1f8b ? ' (gzip-compressed? decompress it first)' : '';
    throw new CaptureFileError(
      `${name}: not a pcap or pcapng file: magic 0x${hex}${hint}; ` +
        'expected a1b2c3d4/a1b23c4d (pcap, either byte order) or 0a0d0d0a (pcapng)',
      0,
    );
  }
}
