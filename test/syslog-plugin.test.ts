// The seed's pipeline with its syslog plugin as the last element, delivering
// to a real rsyslogd on loopback.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { riffAsync, FIXTURES } from './helpers.js';
import { Rsyslog, rsyslogSkip } from './rsyslog.js';

const rs = new Rsyslog();
after(() => rs.stop());

for (const proto of ['udp', 'tcp'] as const) {
  test(`source -> filter -> syslog: the packets holding "pcap" reach rsyslog over ${proto}`, { skip: rsyslogSkip }, async () => {
    if (!rs.child) {
      await rs.init();
      await rs.start();
    }
    const port = proto === 'udp' ? rs.udpPort : rs.tcpPort;
    const run = riffAsync([
      '-q',
      '--lua',
      path.join(FIXTURES, 'seed-syslog', 'elements.lua'),
      '-r',
      path.join(FIXTURES, 'http.pcap'),
      '-o',
      `syslog:${proto}://127.0.0.1:${port}?app=riff${proto}`,
    ]);
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^2 records emitted$/m);
    assert.match(r.stderr, new RegExp(`^output syslog:${proto}://127\\.0\\.0\\.1:${port}\\?app=riff${proto}: 2 written$`, 'm'));
    const end = Date.now() + 10_000;
    let got: Record<string, unknown>[] = [];
    while (Date.now() < end && (got = rs.json(`riff${proto}`)).length < 2) await new Promise((res) => setTimeout(res, 50));
    assert.deepEqual(got.map((m) => m.id).sort((a, b) => Number(a) - Number(b)), [10, 41]);
    for (const m of got) {
      assert.equal(m.type, 'riff_packet');
      assert.equal(m.found, true);
      const data = Buffer.from((m.data as { $bytes: string }).$bytes, 'base64');
      assert.ok(data.includes('pcap'), 'the packet bytes travel with the record');
    }
  });
}
