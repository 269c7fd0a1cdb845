// Writes the small capture files the tests read, plus a .txt beside each that
// says what a correct reader must return for it. Everything is fixed (times,
// seeds, addresses) so re-running produces byte-identical files.

import { existsSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  arp,
  dns,
  ethernet,
  ETHERTYPE,
  icmp6Echo,
  icmpEcho,
  IPPROTO,
  ipv4,
  ipv6,
  LINKTYPE,
  PcapFileWriter,
  PcapngWriter,
  pcapngTimestampToSecNsec,
  PCAPNG,
  Rng,
  sll,
  tcp,
  TCP_FLAGS,
  tcpConversation,
  udp,
  type CraftedPacket,
  type TcpEndpoint,
} from './lib/craft.js';

/** 2017-09-08 06:00:00 UTC, when the seed's capture was taken. */
const T0 = Date.UTC(2017, 8, 8, 6, 0, 0) / 1000;

function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, 'package.json'))) return d;
    const up = dirname(d);
    if (up === d) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    d = up;
  }
}

const ROOT = packageRoot();
const FIX = join(ROOT, 'fixtures');
const out = (name: string) => join(FIX, name);
const PCAP = Buffer.from('pcap');

// ---------------------------------------------------------------- http.pcap

const GW = { mac: '02:00:00:00:00:01', ip: '10.0.0.1' };
const WEB = { mac: '02:00:00:00:00:50', ip: '10.0.0.80' };
const CLIENT = [11, 12, 13].map((n) => ({ mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`, ip: `10.0.0.${n}` }));

interface Timed {
  us: number; // microseconds since the epoch; exact in a double for these dates
  frame: Buffer;
  what: string;
}

function httpDate(us: number): string {
  return new Date(Math.floor(us / 1000)).toUTCString();
}

function response(us: number, type: string, body: string): Buffer {
  const b = Buffer.from(body);
  return Buffer.from(
    'HTTP/1.1 200 OK\r\n' +
      'Server: nginx/1.10.3\r\n' +
      `Date: ${httpDate(us)}\r\n` +
      `Content-Type: ${type}\r\n` +
      `Content-Length: ${b.length}\r\n` +
      'Connection: keep-alive\r\n' +
      '\r\n' +
      body,
  );
}

function describe(p: CraftedPacket, client: string): string {
  const tcpOff = 14 + 20;
  const f = p.frame[tcpOff + 13];
  const names = [
    [TCP_FLAGS.SYN, 'SYN'],
    [TCP_FLAGS.FIN, 'FIN'],
    [TCP_FLAGS.PSH, 'PSH'],
    [TCP_FLAGS.ACK, 'ACK'],
  ] as const;
  const flags = names.filter(([bit]) => f & bit).map(([, n]) => n).join('/');
  const hl = (p.frame[tcpOff + 12] >> 4) * 4;
  const len = p.frame.length - tcpOff - hl;
  const dir = p.from === 'client' ? `${client} > web` : `web > ${client}`;
  let first = '';
  if (len > 0) {
    const text = p.frame.subarray(tcpOff + hl, tcpOff + hl + 40).toString('latin1');
    first = ' "' + text.split('\r\n')[0] + '"';
  }
  return `TCP ${dir} ${flags} len=${len}${first}`;
}

function conversation(
  startUs: number,
  client: { mac: string; ip: string },
  port: number,
  isn: number,
  request: Buffer,
  resp: (us: number) => Buffer,
  o: { timestamps: boolean; rttUs: number; wscale?: number },
): Timed[] {
  const c: TcpEndpoint = { mac: client.mac, ip: client.ip, port, isn, window: 64240, wscale: o.wscale, ipId: isn & 0xffff };
  const s: TcpEndpoint = { mac: WEB.mac, ip: WEB.ip, port: 80, isn: (isn * 7 + 0x5eed) >>> 0, window: 65160, wscale: o.wscale === undefined ? undefined : 7, ipId: 0 };
  // The Date header depends on when the response is sent, which depends on
  // the packets before it; the handshake and request take ~1.5 RTT.
  const body = resp(startUs + Math.round(1.5 * o.rttUs));
  const pkts = tcpConversation({ client: c, server: s, request, response: body, timestamps: o.timestamps, rttUs: o.rttUs, gapUs: 40 });
  const outp: Timed[] = [];
  let us = startUs;
  for (const p of pkts) {
    us += p.delayUs;
    outp.push({ us, frame: p.frame, what: describe(p, client.ip) });
  }
  return outp;
}

function httpFixture(): void {
  const start = T0 * 1e6;
  const pk: Timed[] = [];
  let us = start + 1234;
  const c1 = CLIENT[0];

  // Address resolution and name lookup come first, as they did for curl.
  pk.push({
    us,
    frame: ethernet({ dst: 'ff:ff:ff:ff:ff:ff', src: c1.mac, type: ETHERTYPE.ARP }, arp({ op: 'request', senderMac: c1.mac, senderIp: c1.ip, targetIp: GW.ip })),
    what: `ARP who-has ${GW.ip} tell ${c1.ip}`,
  });
  us += 211;
  pk.push({
    us,
    // Received frames are padded to the 60-byte Ethernet minimum; this one keeps its padding.
    frame: ethernet({ dst: c1.mac, src: GW.mac, type: ETHERTYPE.ARP, padTo: 60 }, arp({ op: 'reply', senderMac: GW.mac, senderIp: GW.ip, targetMac: c1.mac, targetIp: c1.ip })),
    what: `ARP ${GW.ip} is-at ${GW.mac}`,
  });

  const dnsPkt = (fromClient: boolean, id: number, payload: Buffer, ipId: number) =>
    ethernet(
      { dst: fromClient ? GW.mac : c1.mac, src: fromClient ? c1.mac : GW.mac, type: ETHERTYPE.IPV4 },
      ipv4(
        { src: fromClient ? c1.ip : GW.ip, dst: fromClient ? GW.ip : c1.ip, proto: IPPROTO.UDP, id: ipId, df: fromClient, ttl: 64 },
        udp({ src: fromClient ? c1.ip : GW.ip, dst: fromClient ? GW.ip : c1.ip, sport: fromClient ? 41822 + id % 2 : 53, dport: fromClient ? 53 : 41822 + id % 2 }, payload),
      ),
    );
  const q = (id: number, type: 'A' | 'AAAA') => dns({ id, rd: true, questions: [{ name: 'www.lua.ren', type }] });
  const r = (id: number, type: 'A' | 'AAAA', data: string) =>
    dns({
      id,
      response: true,
      rd: true,
      ra: true,
      questions: [{ name: 'www.lua.ren', type }],
      answers: [
        { name: 'www.lua.ren', type: 'CNAME', ttl: 600, data: 'lua.ren' },
        { name: 'lua.ren', type, ttl: 600, data },
      ],
    });
  us += 3017;
  pk.push({ us, frame: dnsPkt(true, 0x2c4a, q(0x2c4a, 'A'), 0x3a01), what: 'DNS query A www.lua.ren' });
  us += 87;
  pk.push({ us, frame: dnsPkt(true, 0x2c4b, q(0x2c4b, 'AAAA'), 0x3a02), what: 'DNS query AAAA www.lua.ren' });
  us += 10480;
  pk.push({ us, frame: dnsPkt(false, 0x2c4a, r(0x2c4a, 'A', WEB.ip), 0x0001), what: 'DNS response CNAME lua.ren, A 10.0.0.80' });
  us += 95;
  pk.push({ us, frame: dnsPkt(false, 0x2c4b, r(0x2c4b, 'AAAA', '2001:db8::80'), 0x0002), what: 'DNS response CNAME lua.ren, AAAA 2001:db8::80' });

  // 1: the seed's request, curl --user-agent "pcap testcase" www.lua.ren
  us += 412;
  pk.push(
    ...conversation(
      us,
      c1,
      49210,
      0x6b8b4567,
      Buffer.from('GET / HTTP/1.1\r\nHost: www.lua.ren\r\nUser-Agent: pcap testcase\r\nAccept: */*\r\n\r\n'),
      (t) => response(t, 'text/html', '<!DOCTYPE html>\n<html><head><title>lua.ren</title></head>\n<body><h1>Lua</h1><p>Scripting for everything.</p></body></html>\n'),
      { timestamps: true, rttUs: 1800, wscale: 7 },
    ),
  );

  // 2 and 3 overlap in time, so the file interleaves two connections.
  const t2 = start + 1_250_000;
  pk.push(
    ...conversation(
      t2,
      CLIENT[1],
      51000,
      0x327b23c6,
      Buffer.from(
        'GET /index.html HTTP/1.1\r\n' +
          'Host: www.lua.ren\r\n' +
          'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:55.0) Gecko/20100101 Firefox/55.0\r\n' +
          'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n' +
          'Accept-Language: en-US,en;q=0.5\r\n' +
          'Accept-Encoding: gzip, deflate\r\n' +
          'Connection: keep-alive\r\n' +
          'Upgrade-Insecure-Requests: 1\r\n' +
          '\r\n',
      ),
      (t) =>
        response(
          t,
          'text/html; charset=utf-8',
          '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index</title></head><body>\n' +
            Array.from({ length: 40 }, (_, i) => `<p>Section ${i + 1}: tables, metatables, coroutines and closures.</p>\n`).join('') +
            '</body></html>\n',
        ),
      { timestamps: true, rttUs: 2400, wscale: 7 },
    ),
  );
  const form = 'title=hello&text=' + Array.from({ length: 260 }, (_, i) => `word${i}`).join('+') + '&tags=lua,riff,sniffer&submit=Post';
  pk.push(
    ...conversation(
      t2 + 1_700,
      CLIENT[2],
      40022,
      0x643c9869,
      Buffer.from(
        'POST /api/comments HTTP/1.1\r\n' +
          'Host: www.lua.ren\r\n' +
          'User-Agent: python-requests/2.18.4\r\n' +
          'Accept-Encoding: gzip, deflate\r\n' +
          'Accept: */*\r\n' +
          'Connection: keep-alive\r\n' +
          'Content-Type: application/x-www-form-urlencoded\r\n' +
          `Content-Length: ${form.length}\r\n` +
          '\r\n' +
          form,
      ),
      (t) => response(t, 'application/json', '{"ok":true,"id":4711}\n'),
      // No timestamps or window scaling, like some older stacks.
      { timestamps: false, rttUs: 3100 },
    ),
  );

  // 4: a plain GET whose *response* mentions libpcap, so "pcap" appears in a
  // server-to-client packet and not only in a request.
  pk.push(
    ...conversation(
      start + 2_600_000,
      CLIENT[1],
      51004,
      0x66334873,
      Buffer.from('GET /docs/tools.html HTTP/1.1\r\nUser-Agent: Wget/1.19.1 (linux-gnu)\r\nAccept: */*\r\nAccept-Encoding: identity\r\nHost: www.lua.ren\r\nConnection: Keep-Alive\r\n\r\n'),
      (t) => response(t, 'text/html', '<html><body><h1>Tools</h1><p>riff reads captures written by tcpdump and libpcap.</p></body></html>\n'),
      { timestamps: true, rttUs: 2000, wscale: 7 },
    ),
  );

  // Stable sort keeps each connection's own order when times tie.
  pk.sort((a, b) => a.us - b.us);

  const w = new PcapFileWriter(out('http.pcap'), { linktype: LINKTYPE.ETHERNET, snaplen: 262144 });
  const lines: string[] = [];
  console.log('http.pcap:');
  pk.forEach((p, i) => {
    w.write(Math.floor(p.us / 1e6), p.us % 1e6, p.frame);
    const has = p.frame.indexOf(PCAP) >= 0;
    lines.push(`${i + 1}\t${p.frame.length}\t${has ? 1 : 0}`);
    console.log(`  ${String(i + 1).padStart(2)}  ${String(p.frame.length).padStart(5)}  pcap=${has ? 'yes' : 'no '}  ${p.what}`);
  });
  w.close();
  writeFileSync(out('http.pcap.txt'), lines.join('\n') + '\n');
  const n = lines.filter((l) => l.endsWith('\t1')).length;
  console.log(`  ${pk.length} packets, ${n} contain "pcap"`);
}

// ---------------------------------------------------------------- allbytes.pcap, ns-be.pcap

function allBytesPackets(): Buffer[] {
  const p1 = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const p2 = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
  // Zero runs of several lengths between non-zero bytes, to catch readers or
  // plugins that treat packet data as C strings.
  const p3: number[] = [];
  for (const run of [3, 1, 2, 8, 1, 16, 4, 32]) {
    p3.push(...new Array(run).fill(0));
    p3.push(0x41 + p3.length % 26, 0xff, 0x80 + run);
  }
  p3.push(0, 0, 0);
  const p4 = Buffer.from([0]);
  const p5 = Buffer.from(new Rng(5).fill(new Uint8Array(1514)));
  const p6 = Buffer.from(new Rng(6).fill(new Uint8Array(65535)));
  return [p1, p2, Buffer.from(p3), p4, p5, p6];
}

function allBytesFixtures(): void {
  const pkts = allBytesPackets();
  const usec = [0, 1, 999999, 123456, 500000, 654321];
  const nsec = [123456789, 1, 999999999, 500000001, 987654321, 100];

  const w = new PcapFileWriter(out('allbytes.pcap'), { linktype: LINKTYPE.ETHERNET, snaplen: 65535 });
  const lines: string[] = [];
  pkts.forEach((p, i) => {
    w.write(T0 + i, usec[i], p);
    lines.push(`${i + 1}\t${T0 + i}\t${usec[i]}\t${p.length}\t${p.length}`);
  });
  w.close();
  writeFileSync(out('allbytes.pcap.txt'), lines.join('\n') + '\n');

  const b = new PcapFileWriter(out('ns-be.pcap'), { linktype: LINKTYPE.ETHERNET, snaplen: 262144, nanos: true, bigEndian: true });
  const nl: string[] = [];
  pkts.forEach((p, i) => {
    b.write(T0 + i, nsec[i], p);
    nl.push(`${i + 1}\t${T0 + i}\t${nsec[i]}\t${p.length}\t${p.length}`);
  });
  b.close();
  writeFileSync(out('ns-be.pcap.txt'), nl.join('\n') + '\n');
  console.log(`allbytes.pcap, ns-be.pcap: ${pkts.length} packets (${pkts.map((p) => p.length).join(', ')} bytes)`);
}

// ---------------------------------------------------------------- multi.pcapng

function multiFixture(): void {
  const w = new PcapngWriter(out('multi.pcapng'));
  const lines: string[] = [];
  // Interface ids run on across sections in IDB order, as riff's reader
  // numbers them (src/capture/pcapng.ts): section 2's interface is 2, though
  // the block stores 0 and tshark's frame.interface_id shows 0.
  let ifaceBase = 0;
  let sectionIfaces: { linktype: number; tsresol: number; tsoffset: number }[] = [];
  const note = (iface: number, raw: bigint | null, caplen: number, wirelen: number) => {
    const i = sectionIfaces[iface];
    const t = raw === null ? { sec: 0, nsec: 0 } : pcapngTimestampToSecNsec(raw, i.tsresol, i.tsoffset);
    lines.push(`${ifaceBase + iface}\t${i.linktype}\t${t.sec}\t${t.nsec}\t${caplen}\t${wirelen}`);
  };
  const iface = (o: { linktype: number; tsresol: number; tsoffset?: number; name: string }) => {
    const id = w.addInterface({ linktype: o.linktype, snaplen: 262144, tsresol: o.tsresol, tsoffset: o.tsoffset, name: o.name });
    sectionIfaces.push({ linktype: o.linktype, tsresol: o.tsresol, tsoffset: o.tsoffset ?? 0 });
    return id;
  };
  const epb = (i: number, raw: bigint, data: Buffer, wirelen = data.length, options: { code: number; value: string }[] = []) => {
    w.epb(i, raw, data, wirelen, options);
    note(i, raw, data.length, wirelen);
  };

  const A = { mac: '02:00:00:00:01:0a', ip: '192.168.7.10' };
  const B = { mac: '02:00:00:00:01:14', ip: '192.168.7.20' };
  const eth4 = (s: typeof A, d: typeof A, proto: number, l4: Buffer, id: number) =>
    ethernet({ dst: d.mac, src: s.mac, type: ETHERTYPE.IPV4 }, ipv4({ src: s.ip, dst: d.ip, proto, id }, l4));

  // Section 1: Ethernet at microseconds, Linux cooked at nanoseconds.
  w.section({ options: [{ code: PCAPNG.SHB_USERAPPL, value: 'riff gen-fixtures' }] });
  sectionIfaces = [];
  const eth = iface({ linktype: LINKTYPE.ETHERNET, tsresol: 6, name: 'eth0' });
  const any = iface({ linktype: LINKTYPE.LINUX_SLL, tsresol: 9, name: 'any' });

  const q = dns({ id: 0x0bad, questions: [{ name: 'www.lua.ren', type: 'A' }] });
  epb(eth, w.rawTimestamp(eth, T0, 1_000), eth4(A, B, IPPROTO.UDP, udp({ src: A.ip, dst: B.ip, sport: 5353, dport: 53 }, q), 1));

  const syn = tcp({ src: A.ip, dst: B.ip, sport: 40000, dport: 80, seq: 1000, flags: TCP_FLAGS.SYN, window: 64240, mss: 1460, sackPermitted: true, wscale: 7 });
  const sllSyn = sll({ packetType: 4, addr: A.mac, protocol: ETHERTYPE.IPV4 }, ipv4({ src: A.ip, dst: B.ip, proto: IPPROTO.TCP, id: 2 }, syn));
  epb(any, w.rawTimestamp(any, T0, 123_456_789), sllSyn);

  // 0x00000BAD is the pcapng Custom Block (copiable); its body starts with a
  // Private Enterprise Number (32473 is IANA's example PEN). riff has no use
  // for it and must skip it like any block it does not know.
  const custom = Buffer.alloc(4 + 36);
  custom.writeUInt32LE(32473, 0);
  custom.write('riff: custom block, not a packet', 4);
  w.rawBlock(0x00000bad, custom);
  // A local-use block type (top bit set): nobody outside knows it.
  w.rawBlock(0x80000bad, Buffer.from('local-use block; skip me'));

  // Captured with a 64-byte snap length: caplen < wirelen.
  const big = eth4(A, B, IPPROTO.TCP, tcp({ src: A.ip, dst: B.ip, sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, window: 502 }, Buffer.from('GET /' + 'x'.repeat(140) + ' HTTP/1.1\r\n\r\n')), 3);
  epb(eth, w.rawTimestamp(eth, T0 + 1, 999_999_000), big.subarray(0, 64), big.length, [{ code: PCAPNG.OPT_COMMENT, value: 'truncated to 64 bytes' }]);

  // A Simple Packet Block carries no timestamp: a reader reports 0.
  const arpReq = ethernet({ dst: 'ff:ff:ff:ff:ff:ff', src: A.mac, type: ETHERTYPE.ARP }, arp({ op: 'request', senderMac: A.mac, senderIp: A.ip, targetIp: B.ip }));
  w.spb(arpReq);
  note(0, null, arpReq.length, arpReq.length);

  const ping6 = sll(
    { packetType: 0, addr: B.mac, protocol: ETHERTYPE.IPV6 },
    ipv6({ src: 'fe80::14', dst: 'fe80::a', nextHeader: IPPROTO.ICMPV6, hopLimit: 64 }, icmp6Echo({ src: 'fe80::14', dst: 'fe80::a', id: 7, seq: 1 }, Buffer.from('riff-ping6'))),
  );
  const pbRaw = w.rawTimestamp(any, T0 + 2, 5);
  w.obsoletePacket(any, pbRaw, ping6, ping6.length, 0);
  note(any, pbRaw, ping6.length, ping6.length);

  const synack = tcp({ src: B.ip, dst: A.ip, sport: 80, dport: 40000, seq: 5000, ack: 1001, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, window: 65160, mss: 1460, sackPermitted: true, wscale: 7 });
  epb(eth, w.rawTimestamp(eth, T0 + 3, 1_000), eth4(B, A, IPPROTO.TCP, synack, 77));

  // Section 2: raw IP at 2^-10 s with a 100 s offset. Fractions of 1/1024 s
  // are not whole nanoseconds, so readers must truncate.
  ifaceBase += sectionIfaces.length;
  w.section();
  sectionIfaces = [];
  const raw = iface({ linktype: LINKTYPE.RAW, tsresol: 0x8a, tsoffset: 100, name: 'tun0' });
  const r1 = BigInt(T0 + 10 - 100) * 1024n + 1n;
  epb(raw, r1, ipv4({ src: '10.8.0.2', dst: '10.8.0.1', proto: IPPROTO.ICMP, id: 100 }, icmpEcho({ id: 0x77, seq: 1 }, Buffer.from('abcdefghijklmnop'))));
  const r2 = BigInt(T0 + 10 - 100) * 1024n + 1023n;
  epb(raw, r2, ipv4({ src: '10.8.0.1', dst: '10.8.0.2', proto: IPPROTO.ICMP, id: 9, df: false }, icmpEcho({ reply: true, id: 0x77, seq: 1 }, Buffer.from('abcdefghijklmnop'))));
  const r3 = BigInt(T0 + 11 - 100) * 1024n + 512n;
  epb(raw, r3, ipv6({ src: 'fd00::2', dst: 'fd00::1', nextHeader: IPPROTO.UDP }, udp({ src: 'fd00::2', dst: 'fd00::1', sport: 33434, dport: 53 }, dns({ id: 1, questions: [{ name: 'lua.ren', type: 'AAAA' }] }))));

  w.close();
  writeFileSync(out('multi.pcapng.txt'), lines.join('\n') + '\n');
  console.log(`multi.pcapng: ${lines.length} packets (iface linktype sec nsec caplen wirelen):`);
  for (const l of lines) console.log('  ' + l.replace(/\t/g, ' '));
}

httpFixture();
allBytesFixtures();
multiFixture();
for (const f of ['http.pcap', 'allbytes.pcap', 'ns-be.pcap', 'multi.pcapng']) console.log(`${f}: ${statSync(out(f)).size} bytes`);
