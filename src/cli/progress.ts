// A progress line for long files, like pv or curl: packets, rate, how much of
// the file and the time left, redrawn a few times a second on stderr and
// cleared at the end. Only on a terminal unless asked (--progress): a log or
// a pipe gets nothing it would have to filter out.

const SIZES = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

function size(n: number): string {
  let i = 0;
  while (n >= 1024 && i < SIZES.length - 1) (n /= 1024), i++;
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${SIZES[i]}`;
}

function count(n: number): string {
  if (n < 1e4) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e5 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** The line for `packets` read and `done` of `total` bytes after `seconds` (total 0: unknown, a pipe). */
export function progressLine(packets: number, done: number, total: number, seconds: number): string {
  const rate = seconds > 0 ? packets / seconds : 0;
  let line = `riff: ${count(packets)} packets, ${count(rate)}/s`;
  if (total > 0) {
    const f = Math.min(1, done / total);
    const left = f > 0 ? (seconds * (1 - f)) / f : Infinity;
    line += `, ${(f * 100).toFixed(f < 0.1 ? 1 : 0)}% of ${size(total)}, ${duration(left)} left`;
  }
  return line;
}

export class Progress {
  private timer: NodeJS.Timeout | null = null;
  private drawn = false;
  private readonly t0 = performance.now();

  constructor(
    private readonly sample: () => { packets: number; done: number },
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  start(everyMs = 250): void {
    this.timer = setInterval(() => this.draw(), everyMs);
    this.timer.unref();
  }

  private draw(): void {
    const { packets, done } = this.sample();
    const cols = this.out.columns || 80;
    const line = progressLine(packets, done, this.total, (performance.now() - this.t0) / 1000).slice(0, cols - 1);
    this.out.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  /** Clear the line: the summary starts on a clean one. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
