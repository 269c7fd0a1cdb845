// A real MariaDB server for the tests and the benchmark: Debian's mariadbd
// on a data directory of its own (made by mariadb-install-db), listening on
// 127.0.0.1 at a free port and on a Unix socket, with a user riff@127.0.0.1
// (password "riff") allowed everything. Stopped (and its directory removed)
// by stop(); kill() and start() again simulate a crash and a restart.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const MARIADBD = ['/usr/sbin/mariadbd', '/usr/sbin/mysqld'].find((p) => fs.existsSync(p)) ?? null;
const INSTALL_DB = ['/usr/bin/mariadb-install-db', '/usr/bin/mysql_install_db'].find((p) => fs.existsSync(p)) ?? null;

/** Why no server can be started here, or null. */
export function mariadbUnavailable(): string | null {
  if (!MARIADBD || !INSTALL_DB) return 'MariaDB is not installed (bash scripts/setup installs mariadb-server)';
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class MariaDbServer {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private log = '';

  private constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  get socket(): string {
    return path.join(this.dir, 'sock');
  }

  /** An --output spec for database `db` as user riff over TCP. */
  spec(db: string, options = ''): string {
    return `mysql://riff:riff@127.0.0.1:${this.port}/${db}${options ? '?' + options : ''}`;
  }

  /** Make a data directory and start the server on it (about a second). */
  static async create(): Promise<MariaDbServer> {
    const why = mariadbUnavailable();
    if (why) throw new Error(why);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-mariadb-'));
    // --force: no host name lookup, which a sandboxed CI may not have.
    const r = spawnSync(
      INSTALL_DB!,
      ['--no-defaults', `--datadir=${path.join(dir, 'data')}`, '--auth-root-authentication-method=normal', '--skip-test-db', '--force', ...(process.getuid?.() === 0 ? ['--user=root'] : [])],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (r.status !== 0) throw new Error(`mariadb-install-db failed: ${r.stderr || r.stdout}`);
    const s = new MariaDbServer(dir, await freePort());
    await s.start();
    s.sql("CREATE USER 'riff'@'127.0.0.1' IDENTIFIED BY 'riff'; GRANT ALL ON *.* TO 'riff'@'127.0.0.1'; CREATE USER 'riff'@'localhost' IDENTIFIED BY 'riff'; GRANT ALL ON *.* TO 'riff'@'localhost';");
    return s;
  }

  async start(): Promise<void> {
    fs.rmSync(this.socket, { force: true });
    const child = spawn(
      MARIADBD!,
      [
        '--no-defaults',
        `--datadir=${path.join(this.dir, 'data')}`,
        `--socket=${this.socket}`,
        `--port=${this.port}`,
        '--bind-address=127.0.0.1',
        `--pid-file=${path.join(this.dir, 'pid')}`,
        '--skip-log-bin',
        '--innodb-buffer-pool-size=64M',
        '--skip-name-resolve',
        ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => (this.log = (this.log + d).slice(-4000)));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`mariadbd exited at start: ${this.log}`);
      if (fs.existsSync(this.socket) && spawnSync('mariadb-admin', ['--no-defaults', '-S', this.socket, '-uroot', 'ping'], { timeout: 5000 }).status === 0) return;
      await sleep(50);
    }
    throw new Error(`mariadbd did not start in 20 s: ${this.log}`);
  }

  /** SIGKILL: a crash, nothing flushed beyond what InnoDB already made durable. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** Run SQL as root through the mariadb client; returns its tab-separated output without headers. */
  sql(sql: string, db = ''): string {
    const r = spawnSync('mariadb', ['--no-defaults', '-S', this.socket, '-uroot', '-N', '-B', ...(db ? [db] : []), '-e', sql], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`mariadb: ${r.stderr}`);
    return r.stdout;
  }

  /** On the way out (an exit handler, synchronous): kill and remove. */
  dispose(): void {
    this.child?.kill('SIGKILL');
    this.child = null;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    if (this.child) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child?.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(t);
      this.child = null;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
