// A large, realistic-looking web capture for throughput tests:
//
//   node dist/scripts/gen-bench-capture.js OUT.pcap [--packets 1000000] [--seed 1]
//       [--flows 5000] [--servers 4] [--concurrency 256] [--pcap-rate 0.01] [--dns-rate 0]
//
// --dns-rate R: that share of the connections starts with a DNS lookup (UDP
// to a resolver) whose answer names the server, each answer with a name of
// its own, so which name a later session gets shows which answer was seen.
//
// Many keep-alive HTTP/1.1 connections to port 80 of a few servers run
// interleaved, as a busy server's uplink would see them. Everything is
// streamed: only the packets of each open connection's current step are held.

import {
  PcapFileWriter,
  Rng,
  TcpFlow,
  LINKTYPE,
  ETHERTYPE,
  IPPROTO,
  dns,
  ethernet,
  ipv4,
  udp,
  type CraftedPacket,
} from './lib/craft.js';

interface Args {
  out: string;
  packets: number;
  seed: number;
  flows: number;
  servers: number;
  concurrency: number;
  pcapRate: number;
  dnsRate: number;
}

function usage(msg?: string): never {
  if (msg) console.error(msg);
  console.error(
    'usage: gen-bench-capture OUT.pcap [--packets 1000000] [--seed 1] [--flows 5000] [--servers 4] [--concurrency 256] [--pcap-rate 0.01] [--dns-rate 0]',
  );
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { out: '', packets: 1_000_000, seed: 1, flows: 5000, servers: 4, concurrency: 256, pcapRate: 0.01, dnsRate: 0 };
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < 0) usage(`bad value for ${name}: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let k = argv[i];
    let v: string | undefined;
    if (k.startsWith('--') && k.includes('=')) [k, v] = [k.slice(0, k.indexOf('=')), k.slice(k.indexOf('=') + 1)];
    const take = () => v ?? argv[++i];
    switch (k) {
      case '--packets': a.packets = Math.floor(num(k, take())); break;
      case '--seed': a.seed = Math.floor(num(k, take())); break;
      case '--flows': a.flows = Math.max(1, Math.floor(num(k, take()))); break;
      case '--servers': a.servers = Math.min(200, Math.max(1, Math.floor(num(k, take())))); break;
      case '--concurrency': a.concurrency = Math.max(1, Math.floor(num(k, take()))); break;
      case '--pcap-rate': a.pcapRate = num(k, take()); break;
      case '--dns-rate': a.dnsRate = num(k, take()); break;
      case '-h':
      case '--help': usage();
      default:
        if (k.startsWith('-') || a.out) usage(`unexpected argument: ${k}`);
        a.out = k;
    }
  }
  if (!a.out) usage();
  return a;
}

const args = parseArgs(process.argv.slice(2));
const rng = new Rng(args.seed);
const PCAP = Buffer.from('pcap');

// ---------------------------------------------------------------- vocabulary
// None of these contain "pcap": the only packets that do are the requests
// picked at --pcap-rate (and any the final scan finds by chance).

const HOSTS = ['www.example.com', 'api.example.com', 'static.example.net', 'shop.example.org', 'cdn.example.io', 'www.lua.ren', 'news.example.com', 'img.example.net', 'm.example.com', 'login.example.org'];
const WORDS = ['index', 'assets', 'static', 'js', 'css', 'img', 'images', 'api', 'v1', 'v2', 'users', 'items', 'search', 'cart', 'checkout', 'product', 'category', 'news', 'article', 'comments', 'login', 'session', 'profile', 'settings', 'feed', 'video', 'thumb', 'large', 'small', 'download', 'docs', 'help', 'about', 'blog', '2017', '09', 'archive', 'tag', 'lua', 'metrics'];
const EXT = ['', '', '.html', '.js', '.css', '.png', '.jpg', '.json', '.svg', '.woff2', '.gif', '.php'];
const PARAMS = ['q', 'id', 'page', 'sort', 'lang', 'ref', 'utm_source', 'utm_medium', 'utm_campaign', 'session', 'limit', 'offset', 'v', 'cb'];
const AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/61.0.3163.79 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_6) AppleWebKit/603.3.8 (KHTML, like Gecko) Version/10.1.2 Safari/603.3.8',
  'Mozilla/5.0 (X11; Linux x86_64; rv:55.0) Gecko/20100101 Firefox/55.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X) AppleWebKit/603.3.8 (KHTML, like Gecko) Version/10.0 Mobile/14G60 Safari/602.1',
  'Mozilla/5.0 (Linux; Android 7.0; SM-G930F Build/NRD90M) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.107 Mobile Safari/537.36',
  'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
  'curl/7.55.1',
  'python-requests/2.18.4',
  'Wget/1.19.1 (linux-gnu)',
  'okhttp/3.8.1',
];
const PCAP_AGENTS = ['pcap testcase', 'libpcap-replay/1.8.1', 'Mozilla/5.0 (compatible; pcap-probe/0.3)'];
const LANGS = ['en-US,en;q=0.9', 'en-GB,en;q=0.8', 'de-DE,de;q=0.9,en;q=0.5', 'zh-CN,zh;q=0.9', 'fr-FR,fr;q=0.8,en;q=0.3', 'ja-JP,ja;q=0.9'];
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function token(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += B64[rng.u32() & 63];
  return s;
}

function path(): string {
  let p = '';
  const depth = rng.int(0, 4);
  for (let i = 0; i < depth; i++) p += '/' + rng.pick(WORDS);
  p += '/' + (rng.chance(0.3) ? token(rng.int(6, 24)) : rng.pick(WORDS)) + rng.pick(EXT);
  if (rng.chance(0.4)) {
    const n = rng.int(1, 4);
    for (let i = 0; i < n; i++) p += (i ? '&' : '?') + rng.pick(PARAMS) + '=' + token(rng.int(1, 16));
  }
  return p;
}

/** Scrubs "pcap" out of a body pool so bodies never match by accident. */
function scrub(b: Buffer): Buffer {
  for (let i = b.indexOf(PCAP); i >= 0; i = b.indexOf(PCAP, i)) b[i] ^= 0x20;
  return b;
}

// Bodies are slices of two pools: compressed/binary-looking bytes and HTML-ish text.
const BIN = scrub(Buffer.from(rng.fill(new Uint8Array(4 << 20))));
const TEXT = (() => {
  const parts: string[] = [];
  let n = 0;
  while (n < 2 << 20) {
    const w = rng.pick(WORDS);
    const s = rng.chance(0.08) ? `</p>\n<p class="${w}">` : rng.chance(0.05) ? `<a href="/${w}/${rng.pick(WORDS)}">${w}</a> ` : w + ' ';
    parts.push(s);
    n += s.length;
  }
  return scrub(Buffer.from(parts.join('')));
})();

let requestsWithPcap = 0;
let requests = 0;

function request(host: string, cookie: string): Buffer {
  requests++;
  const post = rng.chance(0.15);
  const marked = rng.chance(args.pcapRate);
  if (marked) requestsWithPcap++;
  const ua = marked ? rng.pick(PCAP_AGENTS) : rng.pick(AGENTS);
  const target = rng.int(200, 1400);
  let h = `${post ? 'POST' : 'GET'} ${path()} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: ${ua}\r\n`;
  h += rng.chance(0.5) ? 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8\r\n' : 'Accept: */*\r\n';
  if (rng.chance(0.7)) h += `Accept-Language: ${rng.pick(LANGS)}\r\n`;
  if (rng.chance(0.8)) h += 'Accept-Encoding: gzip, deflate\r\n';
  if (rng.chance(0.5)) h += `Referer: http://${rng.pick(HOSTS)}${path()}\r\n`;
  h += 'Connection: keep-alive\r\n';
  let body = '';
  if (post) {
    // A few uploads are larger than one segment.
    const size = rng.chance(0.05) ? rng.int(2000, 6000) : rng.int(20, Math.max(20, target - h.length - 120));
    const json = rng.chance(0.5);
    if (json) body = `{"id":${rng.int(1, 99999)},"data":"${token(Math.max(1, size - 24))}"}`;
    else body = `${rng.pick(PARAMS)}=${token(Math.max(1, size - 10))}`;
    h += `Content-Type: ${json ? 'application/json' : 'application/x-www-form-urlencoded'}\r\nContent-Length: ${body.length}\r\n`;
  }
  // Cookies make up the difference, as they do in real requests.
  const room = target - h.length - body.length - 12;
  if (room > 20) h += `Cookie: ${cookie}${room > cookie.length + 30 ? '; _ga=' + token(room - cookie.length - 8) : ''}\r\n`;
  let text = h + '\r\n' + body;
  // Random tokens spell "pcap" now and then; keep the marked requests the only ones.
  if (!marked && text.includes('pcap')) text = text.replaceAll('pcap', 'pCap');
  return Buffer.from(text, 'latin1');
}

const TYPES = [
  { type: 'text/html; charset=utf-8', text: true },
  { type: 'application/javascript', text: true },
  { type: 'text/css', text: true },
  { type: 'application/json', text: true },
  { type: 'image/jpeg', text: false },
  { type: 'image/png', text: false },
  { type: 'application/octet-stream', text: false },
];

function response(nowUs: number): Buffer {
  const r = rng.next();
  if (r < 0.07) {
    return Buffer.from(`HTTP/1.1 304 Not Modified\r\nServer: nginx/1.12.1\r\nDate: ${new Date(nowUs / 1000).toUTCString()}\r\nETag: "${token(12)}"\r\nConnection: keep-alive\r\n\r\n`, 'latin1');
  }
  const status = r < 0.09 ? '404 Not Found' : '200 OK';
  const t = rng.pick(TYPES);
  const s = rng.next();
  const size = status !== '200 OK' ? rng.int(150, 600) : s < 0.4 ? rng.int(100, 1200) : s < 0.8 ? rng.int(1200, 30000) : rng.int(30000, 200000);
  // Binary types get random bytes, text types text (not gzip: random bytes
  // labelled gzip only make dissectors complain).
  const pool = t.text ? TEXT : BIN;
  const off = rng.int(0, pool.length - size - 1);
  const head = Buffer.from(
    `HTTP/1.1 ${status}\r\nServer: nginx/1.12.1\r\nDate: ${new Date(nowUs / 1000).toUTCString()}\r\nContent-Type: ${t.type}\r\nContent-Length: ${size}\r\n` +
      `Cache-Control: max-age=${rng.pick([0, 60, 300, 3600, 86400])}\r\nConnection: keep-alive\r\n\r\n`,
    'latin1',
  );
  return Buffer.concat([head, pool.subarray(off, off + size)]);
}

// ---------------------------------------------------------------- hosts and flows

const ROUTER_MAC = '02:00:00:00:fe:01';
const servers = Array.from({ length: args.servers }, (_, i) => ({
  mac: `02:00:00:14:00:${(i + 1).toString(16).padStart(2, '0')}`,
  ip: `10.20.0.${10 + i}`,
}));
// About five connections per client address, each from its own ephemeral port.
const nClients = Math.max(1, Math.ceil(args.flows / 5));
const clientPortBase = Array.from({ length: nClients }, () => rng.int(32768, 55000));
const clientIp = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${(i & 255) || 1}`;

interface Active {
  flow: TcpFlow;
  queue: CraftedPacket[];
  qi: number;
  exchangesLeft: number;
  host: string;
  cookie: string;
  closed: boolean;
}

const RESOLVER = { mac: '02:00:00:00:00:35', ip: '10.0.0.53' };
let lookups = 0;

/** A client's lookup of `name` and the resolver's answer `ip`, as two frames. */
function lookup(clientIp: string, port: number, name: string, ip: string): CraftedPacket[] {
  const id = rng.u32() & 0xffff;
  lookups++;
  const frame = (src: string, dst: string, sport: number, dport: number, m: Buffer, smac: string, dmac: string) =>
    ethernet({ src: smac, dst: dmac, type: ETHERTYPE.IPV4 }, ipv4({ src, dst, proto: IPPROTO.UDP }, udp({ src, dst, sport, dport }, m)));
  const q = dns({ id, rd: true, questions: [{ name, type: 'A' }] });
  const r = dns({ id, response: true, rd: true, ra: true, questions: [{ name, type: 'A' }], answers: [{ name, type: 'A', ttl: 60, data: ip }] });
  return [
    { from: 'client', frame: frame(clientIp, RESOLVER.ip, port, 53, q, ROUTER_MAC, RESOLVER.mac), delayUs: 0 },
    { from: 'server', frame: frame(RESOLVER.ip, clientIp, 53, port, r, RESOLVER.mac, ROUTER_MAC), delayUs: 0 },
  ];
}

let flowsStarted = 0;
let exchangePackets = 0;
let exchanges = 0;

function startFlow(): Active {
  const k = flowsStarted++;
  // Uniqueness of (ip, port): the k-th use of an address takes the next port.
  const ci = k % nClients;
  const port = clientPortBase[ci] + Math.floor(k / nClients);
  const srv = servers[rng.u32() % servers.length];
  const flow = new TcpFlow({
    client: { mac: ROUTER_MAC, ip: clientIp(ci), port: port > 65535 ? 32768 + (port % 32768) : port, isn: rng.u32(), window: 64240, wscale: 7, ipId: rng.u32() & 0xffff, ttl: rng.pick([52, 56, 57, 115, 116, 119]) },
    server: { mac: srv.mac, ip: srv.ip, port: 80, isn: rng.u32(), window: 29200, wscale: 9, ipId: 0, ttl: 64 },
    sackPermitted: true,
    timestamps: false,
  });
  // Size each connection so that about --flows of them fill --packets.
  const ppe = exchanges > 20 ? exchangePackets / exchanges : 25;
  const mean = Math.max(1, (args.packets / args.flows - 7) / ppe);
  // The lookup comes first, from another port of the same client; its answer
  // names this server until the next lookup of it.
  const before = args.dnsRate > 0 && rng.chance(args.dnsRate) ? lookup(clientIp(ci), 1024 + (rng.u32() % 30000), `s${srv.ip.split('.')[3]}-${k}.example.com`, srv.ip) : [];
  return {
    flow,
    queue: before.concat(flow.handshake()),
    qi: 0,
    exchangesLeft: rng.int(1, Math.max(1, Math.round(2 * mean - 1))),
    host: rng.pick(HOSTS),
    cookie: `sid=${token(rng.int(16, 40))}`,
    closed: false,
  };
}

/** Next step of a connection; false when it has nothing more to send. */
function advance(a: Active, nowUs: number): boolean {
  if (a.closed) return false;
  if (a.exchangesLeft > 0) {
    a.exchangesLeft--;
    const req = a.flow.send('client', request(a.host, a.cookie), { finalAck: false });
    const resp = a.flow.send('server', response(nowUs), { ackEvery: 2, finalAck: true });
    a.queue = req.concat(resp);
    exchanges++;
    exchangePackets += a.queue.length;
  } else {
    a.queue = a.flow.close(rng.chance(0.7) ? 'client' : 'server');
    a.closed = true;
  }
  a.qi = 0;
  return true;
}

// ---------------------------------------------------------------- main loop

const T0 = Date.UTC(2017, 8, 8, 6, 0, 0) * 1000; // µs
const started = process.hrtime.bigint();
const w = new PcapFileWriter(args.out, { linktype: LINKTYPE.ETHERNET, snaplen: 262144 });
const active: Active[] = [];
let us = T0;
let withPcap = 0;
let wireBytes = 0;

for (let n = 0; n < args.packets; ) {
  while (active.length < args.concurrency && (flowsStarted < args.flows || active.length === 0)) active.push(startFlow());
  const k = rng.u32() % active.length;
  const a = active[k];
  if (a.qi >= a.queue.length && !advance(a, us)) {
    // Keep slot order irrelevant: swap-remove, refilled at the top of the loop.
    active[k] = active[active.length - 1];
    active.pop();
    continue;
  }
  const p = a.queue[a.qi];
  a.queue[a.qi++] = undefined as unknown as CraftedPacket; // let written frames be collected
  us += 1 + (rng.u32() % 19);
  w.write(Math.floor(us / 1e6), us % 1e6, p.frame);
  wireBytes += p.frame.length;
  if (p.frame.indexOf(PCAP) >= 0) withPcap++;
  n++;
}
w.close();

const secs = Number(process.hrtime.bigint() - started) / 1e9;
console.log(
  `${args.out}: ${w.packets} packets, ${wireBytes} bytes of packets (${w.bytes} file), ${flowsStarted} flows to ${args.servers} servers, ` +
    `${requests} requests (${requestsWithPcap} with "pcap"), ${withPcap} packets containing "pcap", ` +
    (lookups ? `${lookups} DNS lookups, ` : '') +
    `${((us - T0) / 1e6).toFixed(3)} s of traffic; generated in ${secs.toFixed(2)} s (${Math.round(w.packets / secs)} pkt/s)`,
);
