// QUIC client Initial unprotection (RFC 9001 5.2-5.4, RFC 9369 3.3): what Lua
// in WebAssembly cannot do without crypto. The client's first packets are
// protected with keys anyone can derive from the Destination Connection ID,
// so reading the ClientHello (and its server name) inside them is parsing,
// not breaking anything. Bytes in, bytes out: the packet never becomes a JS
// string.

import { createRequire } from 'node:module';

// node:crypto loads on the first QUIC Initial, not with every Lua worker:
// loading it is ~5 ms of each worker's start-up.
let cryptoModule: typeof import('node:crypto') | undefined;
const crypto = (): typeof import('node:crypto') => (cryptoModule ??= createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto'));

interface Keys { key: Buffer; iv: Buffer; hp: Buffer }
interface Version { salt: Buffer; prefix: string; initialType: number }

const hex = (s: string) => Buffer.from(s, 'hex');
const V1: Version = { salt: hex('38762cf7f55934b34d179ae6a4c80cadccbb7f0a'), prefix: 'quic ', initialType: 0 };
const DRAFT29: Version = { salt: hex('afbfec289993d24c9e9786f19c6111e04390a899'), prefix: 'quic ', initialType: 0 };
const DRAFT23: Version = { salt: hex('c3eef712c72ebb5a11a7d2432bb46365bef9f502'), prefix: 'quic ', initialType: 0 };
const V2: Version = { salt: hex('0dede3def700a6db819381be6e269dcbf9bd2ed9'), prefix: 'quicv2 ', initialType: 1 };
// draft-ietf-quic-v2 before its number was assigned (0x709a50c4): v2's labels
// and packet types, its own salt; what ngtcp2 0.12 (Debian 12) calls v2draft.
const V2_DRAFT: Version = { salt: hex('a707c203a59b47184a1d62ca570406ea7ae3e5d3'), prefix: 'quicv2 ', initialType: 1 };

/** The Initial salt and labels a version defines; null when riff knows none (openClientInitial then guesses). */
export function quicVersion(v: number): Version | null {
  if (v === 1) return V1;
  if (v === 0x6b3343cf) return V2;
  if (v === 0x709a50c4) return V2_DRAFT;
  if (v >>> 8 === 0xff0000) {
    const draft = v & 0xff;
    if (draft >= 29 && draft <= 34) return DRAFT29;
    if (draft >= 23 && draft <= 28) return DRAFT23;
    return null;
  }
  // Facebook's mvfst drafts and Google's T051 use the draft-29 salt.
  if (v === 0xfaceb002 || v === 0x54303531) return DRAFT29;
  return null;
}

function expandLabel(secret: Buffer, label: string, length: number): Buffer {
  const full = Buffer.from('tls13 ' + label, 'latin1');
  const info = Buffer.concat([Buffer.from([length >> 8, length & 0xff, full.length]), full, Buffer.from([0, 1])]);
  return crypto().createHmac('sha256', secret).update(info).digest().subarray(0, length);
}

/** RFC 9001 5.2: client Initial keys for a Destination Connection ID. */
export function clientInitialKeys(version: Version, dcid: Uint8Array): Keys {
  // Not cached: a flow opens at most a few Initials, and a cache would key on packet bytes.
  const initial = crypto().createHmac('sha256', version.salt).update(dcid).digest();
  const client = expandLabel(initial, 'client in', 32);
  return { key: expandLabel(client, version.prefix + 'key', 16), iv: expandLabel(client, version.prefix + 'iv', 12), hp: expandLabel(client, version.prefix + 'hp', 16) };
}

function varint(b: Uint8Array, q: number): [number, number] | null {
  if (q >= b.length) return null;
  const n = 1 << (b[q] >> 6);
  if (q + n > b.length) return null;
  let v = b[q] & 0x3f;
  for (let i = 1; i < n; i++) v = v * 256 + b[q + i];
  return [v, q + n];
}

/**
 * The plaintext frames of the client Initial packet at the start of
 * `datagram` (a QUIC long header), its keys derived from `dcid` when given
 * (a client's later Initials carry the server's connection ID but keep the
 * first one's keys), else from the packet's own Destination Connection ID.
 * A version whose Initial keys riff does not know (greased, experimental, a
 * draft offered to provoke version negotiation) has no defined keys, so the
 * salts implementations fall back on are tried, with v1's packet types:
 * v1's, then draft-29's (ngtcp2 0.12 protects a greased Initial with the
 * latter); a version riff knows is tried with those too when its own fail.
 * Guessing is safe: a wrong guess fails the AEAD tag, so nothing is read
 * out of a packet that is not an Initial under those keys.
 * Returns the frames, or a string saying why not.
 */
export function openClientInitial(datagram: Uint8Array, dcid?: Uint8Array): Uint8Array | string {
  const b = datagram;
  if (b.length < 7 || (b[0] & 0xc0) !== 0xc0) return 'not a QUIC long header';
  const v = ((b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4]) >>> 0;
  if (v === 0) return 'a version negotiation packet';
  const own = quicVersion(v);
  const tries = [own, V1, DRAFT29].filter((x, i, a): x is Version => !!x && a.indexOf(x) === i);
  let why = '';
  for (const ver of tries) {
    const r = openAs(b, ver, dcid);
    if (typeof r !== 'string') return r;
    if (!why) why = r;
  }
  return own ? why : `version 0x${v.toString(16).padStart(8, '0')} has no Initial keys riff knows, and v1's and draft-29's: ${why}`;
}

function openAs(b: Uint8Array, ver: Version, dcid?: Uint8Array): Uint8Array | string {
  if (((b[0] >> 4) & 3) !== ver.initialType) return 'not an Initial packet';
  let q = 5;
  const dcl = b[q++];
  if (dcl > 20 || q + dcl >= b.length) return 'bad connection ID length';
  const ownDcid = b.subarray(q, q + dcl);
  q += dcl;
  const scl = b[q++];
  if (scl > 20 || q + scl >= b.length) return 'bad connection ID length';
  q += scl;
  const tok = varint(b, q);
  if (!tok || tok[1] + tok[0] > b.length) return 'truncated token';
  q = tok[1] + tok[0];
  const len = varint(b, q);
  if (!len) return 'truncated length';
  const pn = len[1];
  const end = pn + len[0];
  if (end > b.length || len[0] < 20 || pn + 4 + 16 > end) return 'truncated packet';
  const keys = clientInitialKeys(ver, dcid && dcid.length ? dcid : ownDcid);
  const ecb = crypto().createCipheriv('aes-128-ecb', keys.hp, null);
  const mask = ecb.update(b.subarray(pn + 4, pn + 20));
  const first = b[0] ^ (mask[0] & 0x0f);
  const pnLen = (first & 3) + 1;
  // The header with its protection removed is the AEAD's associated data.
  const header = Buffer.from(b.subarray(0, pn + pnLen));
  header[0] = first;
  let number = 0;
  for (let i = 0; i < pnLen; i++) {
    header[pn + i] ^= mask[1 + i];
    number = number * 256 + header[pn + i];
  }
  const nonce = Buffer.from(keys.iv);
  for (let i = 0; i < 4; i++) nonce[11 - i] ^= (number >>> (8 * i)) & 0xff;
  const body = b.subarray(pn + pnLen, end - 16);
  const gcm = crypto().createDecipheriv('aes-128-gcm', keys.key, nonce);
  gcm.setAAD(header);
  gcm.setAuthTag(b.subarray(end - 16, end));
  try {
    return Buffer.concat([gcm.update(body), gcm.final()]);
  } catch {
    return 'authentication failed (not a client Initial, or another connection ID)';
  }
}
