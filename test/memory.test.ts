// riff's own memory does not grow with the length of the capture: packets
// stream through a fixed read buffer, a fixed ring and one reused
// WebAssembly region, and Lua state is the script's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { riff, tree, tmpdir, pcapHeader } from './helpers.js';

/** A classic pcap of n minimal Ethernet/IPv4/UDP frames, written in chunks. */
function synth(file: string, n: number): void {
  const fd = fs.openSync(file, 'w');
  const hdr = pcapHeader(1, 65535);
  fs.writeSync(fd, hdr);
  const rec = 16 + 60;
  const per = 10_000;
  const chunk = Buffer.alloc(rec * per);
  for (let i = 0; i < per; i++) {
    const o = i * rec;
    chunk.writeUInt32LE(60, o + 8);
    chunk.writeUInt32LE(60, o + 12);
    chunk.writeUInt16BE(0x0800, o + 16 + 12);
    chunk[o + 16 + 14] = 0x45;
  }
  for (let done = 0; done < n; done += per) {
    for (let i = 0; i < per; i++) {
      chunk.writeUInt32LE(1_500_000_000 + ((done + i) >>> 10), i * rec);
      chunk.writeUInt32LE(done + i, i * rec + 16 + 26); // vary the source address
    }
    fs.writeSync(fd, chunk, 0, Math.min(per, n - done) * rec);
  }
  fs.closeSync(fd);
}

function peak(file: string, script: string): number {
  const r = riff(['-q', '--verbose', '--lua', script, '-r', file], { timeout: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  const m = /^peak memory ([\d.]+) MiB resident$/m.exec(r.stderr);
  assert.ok(m, r.stderr);
  return Number(m![1]);
}

test('resident memory stays flat from 300k to 1.5M packets', () => {
  const dir = tmpdir();
  const small = path.join(dir, 'small.pcap');
  const big = path.join(dir, 'big.pcap');
  synth(small, 300_000);
  synth(big, 1_500_000);
  const s = tree({ 'count.lua': 'local n = 0\nbuffer = function(p) n = n + #p end\nfunction deinit() print(n) end' });
  const script = path.join(s, 'count.lua');
  const a = peak(small, script);
  const b = peak(big, script);
  fs.rmSync(dir, { recursive: true, force: true });
  // Five times the packets: the same footprint, give or take allocator noise.
  assert.ok(b < a * 1.15 + 16, `peak ${a} MiB for 300k packets, ${b} MiB for 1.5M`);
});
