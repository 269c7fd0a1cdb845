// A process's memory mappings as Linux lists them (/proc/PID/maps, or
// /proc/PID/smaps with each one's resident bytes), and what riff's Lua VMs
// look like there: shared by scripts/soak (resident memory by place) and
// test/reload (VM memories left mapped after reloads).
import fs from 'node:fs';

export interface Mapping {
  lo: bigint;
  hi: bigint;
  perms: string;
  /** The file, [heap], socket:[...], or '' for an anonymous mapping. */
  name: string;
  /** Resident bytes (smaps only; 0 from maps). */
  rss: number;
}

export function mappings(pid: number, withRss = false): Mapping[] {
  const maps: Mapping[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/${withRss ? 'smaps' : 'maps'}`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+ *(.*)$/.exec(line);
    if (m) maps.push({ lo: BigInt(`0x${m[1]}`), hi: BigInt(`0x${m[2]}`), perms: m[3], name: m[4], rss: 0 });
    else if (line.startsWith('Rss:') && maps.length) maps[maps.length - 1].rss = Number(line.split(/\s+/)[1]) * 1024;
  }
  return maps;
}

/**
 * A Lua VM's WebAssembly memory: V8 maps each as its accessible pages
 * followed by the rest of its reservation (several GiB, no access), which
 * nothing else in riff has. `next` is the mapping after `a`.
 */
export function isVmMemory(a: Mapping, next: Mapping | undefined): boolean {
  return a.perms.startsWith('rw') && next !== undefined && next.lo === a.hi && next.perms === '---p' && next.hi - next.lo >= 4n << 30n;
}
