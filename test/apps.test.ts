// plugin.app_id on crafted flows, one or more per application the shipped
// signature file (lua/apps/signatures.txt) can name, each built from the
// protocol's specification (handshakes, banners, magic numbers); the host
// lists on a TLS ClientHello carrying one of the listed names; port rules
// on a payload no byte signature claims. Also: no two signatures claim the
// same crafted flow, QUIC of every version, TLS picked up midstream, port
// rules both ways, RTSP apart from HTTP, TFTP and FTP data flows announced
// by their control flows; and proto.packet's encapsulations, each decoded
// down to its inner flow.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { riff, tree, tmpdir, ROOT, FIXTURES } from './helpers.js';
import { PcapFileWriter, TcpFlow, ETHERTYPE, IPPROTO, ethernet, ipv4, udp, dns, encapSamples, framesInTurn } from '../scripts/lib/craft.js';

type Dir = 'c2s' | 's2c';
interface Case {
  app: string;
  kind: 'tcp' | 'udp';
  sport: number; // server port
  cport?: number;
  msgs: Array<[Dir, Buffer]>;
  /** expected master (carrier) when the app comes from a host list */
  master?: string;
  sip?: string;
  cip?: string;
  note?: string;
}
type Rec = Record<string, any> & { type: string };

const SIGS = fs.readFileSync(path.join(ROOT, 'lua', 'apps', 'signatures.txt'), 'utf8');
const B = (s: string) => Buffer.from(s, 'latin1');
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
const le32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };
const fill = (n: number, v = 0x33) => Buffer.alloc(n, v);
const cat = (...b: Buffer[]) => Buffer.concat(b);

/** A TLS ClientHello record (RFC 8446 4.1.2) with an SNI extension. */
export function clientHello(sni: string, recordVersion = 1): Buffer {
  const name = B(sni);
  const sniExt = cat(u16(0), u16(name.length + 5), u16(name.length + 3), Buffer.from([0]), u16(name.length), name);
  const exts = cat(hex('000b00020100'), sniExt);
  const body = cat(hex('0303'), fill(32, 0x42), Buffer.from([32]), fill(32, 0x17), u16(4), hex('1301c02f'), hex('0100'), u16(exts.length), exts);
  const hs = cat(Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body);
  return cat(Buffer.from([0x16, 3, recordVersion]), u16(hs.length), hs);
}
const tlsAppData = (n = 120) => cat(hex('170303'), u16(n), fill(n, 0x9c));
/** A QUIC long-header Initial of `version`, padded to 1200 bytes (RFC 9000 14.1). */
const quicInitial = (version: number, first = 0xc3) => {
  const h = cat(Buffer.from([first]), u32(version), Buffer.from([8]), hex('0102030405060708'), Buffer.from([0]), hex('00449a'));
  return cat(h, fill(1200 - h.length, 0x5a));
};
/** Version negotiation (RFC 9000 17.2.1): version 0, then the server's versions. */
const quicVN = () => cat(hex('80'), u32(0), hex('00'), hex('08'), hex('0102030405060708'), u32(1), u32(0x6b3343cf));
/** A short-header (1-RTT) packet: nothing to identify. */
const quicShort = () => cat(hex('43'), fill(60, 0x21));
const dnsQuery = (name: string) => dns({ id: 0x1234, questions: [{ name, type: 'A' }] });
const tpkt = (body: Buffer) => cat(hex('0300'), u16(body.length + 4), body);
const nbss = (body: Buffer) => cat(Buffer.from([0, 0]), u16(body.length), body);
const ntp = () => cat(hex('23'), fill(47, 0));
const dhcp = () => { const b = Buffer.alloc(300); b[0] = 1; b[1] = 1; b[2] = 6; b.writeUInt32BE(0x63825363, 236); b[240] = 53; b[241] = 1; b[242] = 1; b[243] = 255; return b; };
const ike = () => { const b = Buffer.alloc(28 + 8, 0); b.fill(0x11, 0, 8); b[16] = 0x21; b[17] = 0x20; b[18] = 34; b[19] = 0x08; b.writeUInt32BE(36, 24); return b; };

/** The cases written by hand, from each protocol's specification. */
function handCases(): Case[] {
  const http = (m: string, host = 'www.example.net') => B(`${m} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: t\r\n\r\n`);
  return [
    { app: 'TLS', kind: 'tcp', sport: 443, msgs: [['c2s', clientHello('api.example.org')], ['s2c', tlsAppData()]] },
    { app: 'TLS', kind: 'tcp', sport: 8443, msgs: [['c2s', tlsAppData()], ['s2c', tlsAppData()]], note: 'midstream: first payload application data' },
    { app: 'TLS', kind: 'tcp', sport: 9443, msgs: [['s2c', cat(hex('160303'), u16(60), hex('02'), fill(59))]], note: 'midstream: ServerHello first' },
    { app: 'SMTPS', master: 'TLS', kind: 'tcp', sport: 465, msgs: [['c2s', clientHello('smtp.example.org')]] },
    { app: 'IMAPS', master: 'TLS', kind: 'tcp', sport: 993, msgs: [['c2s', clientHello('imap.example.org')]] },
    { app: 'POPS', master: 'TLS', kind: 'tcp', sport: 995, msgs: [['c2s', clientHello('pop.example.org')]] },
    { app: 'DoH_DoT', master: 'TLS', kind: 'tcp', sport: 853, msgs: [['c2s', clientHello('dns.example.org')]] },
    { app: 'FTPS', master: 'TLS', kind: 'tcp', sport: 990, msgs: [['c2s', clientHello('ftp.example.org')]] },
    { app: 'DTLS', kind: 'udp', sport: 4433, msgs: [['c2s', cat(hex('16fefd'), hex('0000'), hex('000000000000'), u16(40), fill(40))]] },
    { app: 'SSH', kind: 'tcp', sport: 22, msgs: [['s2c', B('SSH-2.0-OpenSSH_9.2p1\r\n')], ['c2s', B('SSH-2.0-OpenSSH_9.6\r\n')]] },
    { app: 'SSH', kind: 'tcp', sport: 2222, msgs: [['s2c', B('SSH-2.0-dropbear\r\n')]] },
    { app: 'RTSP', kind: 'tcp', sport: 554, msgs: [['c2s', B('OPTIONS rtsp://cam.example/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n')], ['s2c', B('RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n')]] },
    { app: 'RTSP', kind: 'tcp', sport: 8554, msgs: [['c2s', B('DESCRIBE rtsp://cam.example/s RTSP/1.0\r\nCSeq: 2\r\n\r\n')]] },
    { app: 'RTSP', kind: 'tcp', sport: 5554, msgs: [['s2c', B('RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n')]], note: 'midstream response' },
    { app: 'HTTP', kind: 'tcp', sport: 8080, msgs: [['c2s', http('OPTIONS * ')], ['s2c', B('HTTP/1.1 200 OK\r\n\r\n')]], note: 'OPTIONS over HTTP is not RTSP' },
    { app: 'HTTP', kind: 'tcp', sport: 80, msgs: [['c2s', http('GET /index.html')]] },
    { app: 'HTTP', kind: 'tcp', sport: 8000, msgs: [['s2c', B('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')]], note: 'midstream response' },
    { app: 'HTTP', kind: 'tcp', sport: 80, msgs: [['c2s', B('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')]] },
    { app: 'HTTP_Connect', kind: 'tcp', sport: 3128, msgs: [['c2s', http('CONNECT example.com:443', 'example.com:443')]] },
    { app: 'HTTP_Proxy', kind: 'tcp', sport: 3128, msgs: [['c2s', http('GET http://example.com/')]] },
    { app: 'SSDP', kind: 'udp', sport: 1900, msgs: [['c2s', B('M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n')]] },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['c2s', quicInitial(1)]], note: 'v1' },
    { app: 'QUIC', kind: 'udp', sport: 4443, msgs: [['c2s', quicInitial(0x6b3343cf, 0xd3)]], note: 'v2' },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['c2s', quicInitial(0xff00001d)]], note: 'draft-29' },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['c2s', quicInitial(0x1a2a3a4a)]], note: 'greased version' },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['s2c', quicVN()]], note: 'version negotiation' },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['c2s', quicShort()], ['s2c', quicShort()], ['c2s', quicShort()], ['c2s', quicInitial(1)]], note: 'Initial as the third packet' },
    { app: 'QUIC', kind: 'udp', sport: 443, msgs: [['c2s', cat(hex('0d'), hex('0102030405060708'), B('Q043'), fill(40))]], note: 'gQUIC Q043' },
    // AFS RX (OpenAFS rx_packet.h): epoch, cid, call, seq, serial, type 1 (data), flags, status, security 2, spare, service 1
    { app: 'RX', kind: 'udp', sport: 7021, msgs: [['c2s', cat(u32(0x38300000), u32(0x1000), u32(1), u32(1), u32(1), hex('0101000200000001'), fill(40, 0))]], note: 'RX header, AFS backup server port' },
    { app: 'SOCKS', kind: 'tcp', sport: 1080, msgs: [['c2s', hex('050100')]] },
    { app: 'SMTP', kind: 'tcp', sport: 25, msgs: [['s2c', B('220 mail.example.com ESMTP\r\n')], ['c2s', B('EHLO me\r\n')]] },
    { app: 'POP3', kind: 'tcp', sport: 110, msgs: [['s2c', B('+OK POP3 ready\r\n')]] },
    { app: 'IMAP', kind: 'tcp', sport: 143, msgs: [['s2c', B('* OK IMAP4rev1 ready\r\n')]] },
    { app: 'SMBv1', kind: 'tcp', sport: 445, msgs: [['c2s', nbss(cat(hex('ff534d4272'), fill(30, 0)))]] },
    { app: 'SMBv23', kind: 'tcp', sport: 445, msgs: [['c2s', nbss(cat(hex('fe534d4240'), fill(59, 0)))]] },
    { app: 'NetBIOS', kind: 'udp', sport: 137, msgs: [['c2s', cat(hex('8001 0110 0001 0000 0000 0000'), hex('20'), B('CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), hex('00 0021 0001'))]] },
    { app: 'RSYNC', kind: 'tcp', sport: 873, msgs: [['s2c', B('@RSYNCD: 31.0\n')]] },
    { app: 'Git', kind: 'tcp', sport: 9418, msgs: [['c2s', B('0032git-upload-pack /project.git\0host=example.com\0')]] },
    { app: 'BitTorrent', kind: 'tcp', sport: 51413, msgs: [['c2s', cat(hex('13'), B('BitTorrent protocol'), fill(8, 0), fill(20, 0xaa), fill(20, 0xbb))]] },
    { app: 'BitTorrent', kind: 'udp', sport: 51413, msgs: [['c2s', B('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe')]], note: 'DHT' },
    { app: 'eDonkey', kind: 'tcp', sport: 4662, msgs: [['c2s', cat(hex('e3'), le32(6), hex('01'), fill(5))]] },
    { app: 'Gnutella', kind: 'tcp', sport: 6346, msgs: [['c2s', B('GNUTELLA CONNECT/0.6\r\nUser-Agent: x\r\n\r\n')]] },
    { app: 'DirectConnect', kind: 'tcp', sport: 411, msgs: [['c2s', B('$MyNick alice|')]] },
    { app: 'Dropbox', kind: 'udp', sport: 17500, msgs: [['c2s', B('{"host_int": 123, "version": [2, 0], "port": 17500}')]] },
    { app: 'DNS', kind: 'udp', sport: 53, msgs: [['c2s', dnsQuery('example.com')]] },
    { app: 'MDNS', kind: 'udp', sport: 5353, cport: 5353, msgs: [['c2s', dnsQuery('printer.local')]] },
    { app: 'LLMNR', kind: 'udp', sport: 5355, msgs: [['c2s', dnsQuery('host')]] },
    { app: 'NTP', kind: 'udp', sport: 123, msgs: [['c2s', ntp()]] },
    { app: 'NTP', kind: 'udp', sport: 80, cport: 123, msgs: [['c2s', ntp()]], note: 'from port 123 to port 80: the client port names it' },
    { app: 'SIP', kind: 'udp', sport: 40100, cport: 5060, msgs: [['c2s', B('SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP pc\r\n\r\n')]], note: 'a reply first: named by bytes' },
    { app: 'MGCP', kind: 'udp', sport: 40200, cport: 2427, msgs: [['c2s', fill(24, 0x7a)]], note: 'a reply first: the client port names it' },
    { app: 'DHCP', kind: 'udp', sport: 67, cport: 68, msgs: [['c2s', dhcp()]] },
    { app: 'SNMP', kind: 'udp', sport: 161, msgs: [['c2s', cat(hex('3026020101'), hex('0406'), B('public'), hex('a019020400000001020100020100300b300906052b06010201050000'))]] },
    { app: 'Syslog', kind: 'udp', sport: 514, msgs: [['c2s', B('<34>Oct 11 22:14:15 host su: test')]] },
    { app: 'LDAP', kind: 'tcp', sport: 389, msgs: [['c2s', hex('300c020101600702010304008000')]] },
    { app: 'LDAP', kind: 'tcp', sport: 1389, msgs: [['c2s', hex('300c020101600702010304008000')]], note: 'LDAP on 1389' },
    { app: 'Kerberos', kind: 'udp', sport: 88, msgs: [['c2s', cat(hex('6a81a0'), fill(40))]] },
    { app: 'Radius', kind: 'udp', sport: 1812, msgs: [['c2s', cat(hex('0101'), u16(26), fill(16), hex('0106'), B('user'))]] },
    { app: 'Diameter', kind: 'tcp', sport: 3868, msgs: [['c2s', cat(hex('01'), Buffer.from([0, 0, 28]), hex('80000101'), fill(4), fill(8), fill(8))]] },
    { app: 'BGP', kind: 'tcp', sport: 179, msgs: [['c2s', cat(fill(16, 0xff), u16(19), hex('04'))]] },
    { app: 'NetFlow', kind: 'udp', sport: 2055, msgs: [['c2s', cat(hex('0005 0001'), fill(70))]] },
    { app: 'sFlow', kind: 'udp', sport: 6343, msgs: [['c2s', cat(u32(5), u32(1), fill(40))]] },
    { app: 'Zabbix', kind: 'tcp', sport: 10051, msgs: [['c2s', cat(B('ZBXD'), hex('01'), le32(2), le32(0), B('{}'))]] },
    { app: 'Munin', kind: 'tcp', sport: 4949, msgs: [['s2c', B('# munin node at host.example\n')]] },
    { app: 'XDMCP', kind: 'udp', sport: 177, msgs: [['c2s', hex('0001000200010000')]] },
    { app: 'Telnet', kind: 'tcp', sport: 23, msgs: [['s2c', hex('fffd18fffd20fffd23')]] },
    { app: 'RDP', kind: 'tcp', sport: 3389, msgs: [['c2s', tpkt(cat(hex('0ee000000000'), B('Cookie: x\r\n')))]] },
    { app: 'VNC', kind: 'tcp', sport: 5901, msgs: [['s2c', B('RFB 003.008\n')]] },
    { app: 'TeamViewer', kind: 'tcp', sport: 5938, msgs: [['c2s', cat(hex('1724'), fill(30))]] },
    { app: 'Citrix', kind: 'tcp', sport: 1494, msgs: [['s2c', cat(hex('7f7f494341'), hex('00'))]] },
    { app: 'VMware', kind: 'tcp', sport: 902, msgs: [['s2c', B('220 VMware Authentication Daemon Version 1.10\r\n')]] },
    { app: 'OpenVPN', kind: 'udp', sport: 1194, msgs: [['c2s', cat(hex('38'), fill(8, 0x77), hex('00'), u32(0), fill(4))]] },
    { app: 'OpenVPN', kind: 'tcp', sport: 1194, msgs: [['c2s', cat(u16(14), hex('38'), fill(8, 0x77), hex('00'), u32(0))]] },
    { app: 'WireGuard', kind: 'udp', sport: 41000, msgs: [['c2s', cat(hex('01000000'), fill(144, 0x5e))]] },
    { app: 'IPSec', kind: 'udp', sport: 500, cport: 500, msgs: [['c2s', ike()]] },
    { app: 'PPTP', kind: 'tcp', sport: 1723, msgs: [['c2s', cat(u16(156), hex('0001 1a2b3c4d 0001 0000'), fill(144, 0))]] },
    { app: 'L2TP', kind: 'udp', sport: 1701, msgs: [['c2s', cat(hex('c802'), u16(12), hex('0000 0000 0000'))]] },
    { app: 'TINC', kind: 'tcp', sport: 655, msgs: [['c2s', B('0 node1 17.7\n')]] },
    { app: 'SIP', kind: 'udp', sport: 5060, msgs: [['c2s', B('INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc\r\n\r\n')]] },
    { app: 'SIP', kind: 'udp', sport: 5070, msgs: [['c2s', B('REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc\r\n\r\n')]] },
    { app: 'STUN', kind: 'udp', sport: 3478, msgs: [['c2s', cat(hex('0001 0000 2112a442'), fill(12, 0x61))]] },
    { app: 'STUN', kind: 'udp', sport: 40000, msgs: [['c2s', cat(hex('0001 0000 2112a442'), fill(12, 0x62))]] },
    { app: 'RTCP', kind: 'udp', sport: 30001, cport: 31001, msgs: [['c2s', cat(hex('80c80006'), fill(24))]] },
    { app: 'RTP', kind: 'udp', sport: 30000, cport: 31000, msgs: [['c2s', cat(hex('8000 0010'), u32(1000), u32(0xabcdef01), fill(160))], ['c2s', cat(hex('8000 0011'), u32(1160), u32(0xabcdef01), fill(160))]] },
    { app: 'IAX', kind: 'udp', sport: 4569, msgs: [['c2s', cat(hex('8001 0000'), u32(3), hex('0000 06 01'), fill(4))]] },
    { app: 'H323', kind: 'tcp', sport: 1720, msgs: [['c2s', tpkt(cat(hex('08 02 0001 05'), fill(20)))]] },
    { app: 'CiscoSkinny', kind: 'tcp', sport: 2000, msgs: [['c2s', cat(le32(12), le32(0), le32(1), fill(8))]] },
    { app: 'TeamSpeak', kind: 'udp', sport: 9987, msgs: [['c2s', cat(B('TS3INIT1'), fill(26))]] },
    { app: 'Megaco', kind: 'udp', sport: 2944, msgs: [['c2s', B('MEGACO/1 [192.0.2.1]:2944\r\nTransaction = 1 {}\r\n')]] },
    { app: 'RTMP', kind: 'tcp', sport: 1935, msgs: [['c2s', cat(hex('03'), fill(1536, 0x10))]] },
    { app: 'IceCast', kind: 'tcp', sport: 8000, msgs: [['c2s', B('SOURCE /live ICE/1.0\r\n\r\n')]] },
    { app: 'MPEG_TS', kind: 'udp', sport: 1234, msgs: [['c2s', cat(hex('47'), fill(187), hex('47'), fill(187))]] },
    { app: 'Spotify', kind: 'udp', sport: 57621, cport: 57621, msgs: [['c2s', cat(B('SpotUdp0'), fill(36))]] },
    { app: 'WhatsApp', kind: 'tcp', sport: 5222, msgs: [['c2s', cat(B('WA'), hex('0205'), fill(20))]] },
    { app: 'Telegram', kind: 'tcp', sport: 443, msgs: [['c2s', cat(hex('ef'), fill(80, 0x3c))]] },
    { app: 'Discord', kind: 'udp', sport: 50001, msgs: [['c2s', cat(hex('00010046'), fill(70))]] },
    { app: 'QQ', kind: 'udp', sport: 8000, msgs: [['c2s', cat(hex('02'), fill(20), hex('03'))]] },
    { app: 'IRC', kind: 'tcp', sport: 6667, msgs: [['c2s', B('NICK alice\r\nUSER alice 0 * :A\r\n')]] },
    { app: 'Jabber', kind: 'tcp', sport: 5222, msgs: [['c2s', B("<?xml version='1.0'?><stream:stream to='example.com'>")]] },
    { app: 'Ookla', kind: 'tcp', sport: 8080, msgs: [['c2s', B('HI 1234\n')]] },
    { app: 'Steam', kind: 'udp', sport: 27015, msgs: [['c2s', cat(hex('ffffffff54'), B('Source Engine Query\0'))]] },
    { app: 'RakNet', kind: 'udp', sport: 19132, msgs: [['c2s', cat(hex('01'), fill(8, 0), hex('00ffff00fefefefefdfdfdfd12345678'), fill(8, 1))]] },
    { app: 'Mining', kind: 'tcp', sport: 3333, msgs: [['c2s', B('{"id":1,"method":"mining.subscribe","params":[]}\n')]] },
    { app: 'MQTT', kind: 'tcp', sport: 1883, msgs: [['c2s', cat(hex('1010 0004'), B('MQTT'), hex('0402003c 0004'), B('test'))]] },
    { app: 'COAP', kind: 'udp', sport: 5683, msgs: [['c2s', cat(hex('40011234b4'), B('test'))]] },
    { app: 'AMQP', kind: 'tcp', sport: 5672, msgs: [['c2s', cat(B('AMQP'), hex('00000901'))]] },
    { app: 'Modbus', kind: 'tcp', sport: 502, msgs: [['c2s', hex('0001 0000 0006 01 03 0000 000a')]] },
    { app: 'DNP3', kind: 'tcp', sport: 20000, msgs: [['c2s', cat(hex('0564 05 c9 0100 0200'), fill(2))]] },
    { app: 'IEC60870', kind: 'tcp', sport: 2404, msgs: [['c2s', hex('6804 0700 0000')]] },
    { app: 'S7Comm', kind: 'tcp', sport: 102, msgs: [['c2s', tpkt(cat(hex('11e0 0000 0001 00 c1020100 c2020102 c0010a')))]] },
    { app: 'EthernetIP', kind: 'tcp', sport: 44818, msgs: [['c2s', cat(hex('6500 0400'), fill(20, 0), hex('01000000'))]] },
    { app: 'BACnet', kind: 'udp', sport: 47808, msgs: [['c2s', hex('810b000c 0120ffff00ff1008')]] },
    { app: 'OPC-UA', kind: 'tcp', sport: 4840, msgs: [['c2s', cat(B('HELF'), le32(32), fill(24, 0))]] },
    { app: 'TuyaLP', kind: 'udp', sport: 6667, msgs: [['c2s', cat(hex('000055aa'), fill(40))]] },
    { app: 'Nats', kind: 'tcp', sport: 4222, msgs: [['s2c', B('INFO {"server_id":"x","version":"2.10"}\r\n')]] },
    { app: 'ZeroMQ', kind: 'tcp', sport: 5556, msgs: [['c2s', cat(hex('ff00000000000000017f'), hex('03'), fill(53, 0))]] },
    { app: 'MySQL', kind: 'tcp', sport: 3306, msgs: [['s2c', (() => { const body = cat(hex('0a'), B('8.0.36\0'), fill(40, 0x41)); return cat(Buffer.from([body.length, 0, 0, 0]), body); })()]] },
    { app: 'MySQL', kind: 'tcp', sport: 13306, msgs: [['s2c', (() => { const body = cat(hex('0a'), B('5.7.44\0'), fill(40, 0x41)); return cat(Buffer.from([body.length, 0, 0, 0]), body); })()]], note: 'greeting on another port' },
    { app: 'PostgreSQL', kind: 'tcp', sport: 5432, msgs: [['c2s', (() => { const body = cat(hex('00030000'), B('user\0postgres\0\0')); return cat(u32(body.length + 4), body); })()]] },
    { app: 'MsSQL-TDS', kind: 'tcp', sport: 1433, msgs: [['c2s', cat(hex('1201'), u16(47), hex('00000100'), fill(39, 0))]] },
    { app: 'Oracle', kind: 'tcp', sport: 1521, msgs: [['c2s', cat(u16(58), hex('0000 01 00 0000'), fill(50, 0x28))]] },
    { app: 'MongoDB', kind: 'tcp', sport: 27017, msgs: [['c2s', cat(le32(40), le32(1), le32(0), le32(2013), fill(24, 0))]] },
    { app: 'Redis', kind: 'tcp', sport: 6379, msgs: [['c2s', B('*1\r\n$4\r\nPING\r\n')]] },
    { app: 'Memcached', kind: 'tcp', sport: 11211, msgs: [['c2s', B('stats\r\n')]] },
    { app: 'Cassandra', kind: 'tcp', sport: 9042, msgs: [['c2s', cat(hex('04000001 05'), u32(0))]] },
    { app: 'Corba', kind: 'tcp', sport: 2809, msgs: [['c2s', cat(B('GIOP'), hex('01020100'), le32(8), fill(8))]] },
    { app: 'SMPP', kind: 'tcp', sport: 2775, msgs: [['c2s', cat(u32(24), u32(2), u32(0), u32(1), fill(8, 0))]] },
    { app: 'FIX', kind: 'tcp', sport: 9876, msgs: [['c2s', B('8=FIX.4.4\x019=12\x0135=A\x01')]] },
    { app: 'AJP', kind: 'tcp', sport: 8009, msgs: [['c2s', cat(hex('1234'), u16(10), fill(10))]] },
    { app: 'FastCGI', kind: 'tcp', sport: 9000, msgs: [['c2s', cat(hex('0101000100080000'), fill(8, 0))]] },
    { app: 'Usenet', kind: 'tcp', sport: 119, msgs: [['s2c', B('200 news.example.com ready\r\n')]] },
    { app: 'Kismet', kind: 'tcp', sport: 2501, msgs: [['s2c', B('*KISMET: 0.0.0 1 x\n')]] },
    { app: 'TiVoConnect', kind: 'udp', sport: 2190, msgs: [['c2s', B('tivoconnect=1\nmethod=broadcast\n')]] },
    { app: 'UBNTAC2', kind: 'udp', sport: 10001, msgs: [['c2s', hex('01000000')]] },
    { app: 'HSRP', kind: 'udp', sport: 1985, msgs: [['c2s', cat(hex('00001003 0a 78 00 00'), B('cisco\0\0\0'), u32(0xc0000201))]] },
    { app: 'CAPWAP', kind: 'udp', sport: 5246, msgs: [['c2s', cat(hex('00100200'), fill(20, 0))]] },
    { app: 'Teredo', kind: 'udp', sport: 3544, msgs: [['c2s', cat(hex('6000000000003a40'), fill(32, 0xfe))]] },
    { app: 'GTP_U', kind: 'udp', sport: 2152, msgs: [['c2s', cat(hex('30ff'), u16(40), u32(1), fill(40, 0x45))]] },
    { app: 'GTP_C', kind: 'udp', sport: 2123, msgs: [['c2s', cat(hex('4820'), u16(20), fill(20, 0))]] },
    { app: 'VXLAN', kind: 'udp', sport: 4789, msgs: [['c2s', cat(hex('0800000000138800'), hex('ffffffffffff 020000000001 0806'), fill(28, 0))]], note: 'inner frame not IP: the outer flow is named' },
    { app: 'Elasticsearch', kind: 'tcp', sport: 9300, msgs: [['c2s', cat(B('ES'), fill(20))]] },
    { app: 'AFP', kind: 'tcp', sport: 548, msgs: [['c2s', cat(hex('0004 0001'), u32(0), u32(6), u32(0), hex('0104 00000400'))]] },
    { app: 'TPLINK_SHP', kind: 'tcp', sport: 9999, msgs: [['c2s', cat(u32(20), hex('d0'), fill(19, 0xf2))]] },
    { app: 'Softether', kind: 'tcp', sport: 992, msgs: [['c2s', fill(24, 0x7a)]] },
    ...corpusCases(),
  ];
}

/** Protocols nDPI names in its own test captures that riff lacked, each from its specification. */
function corpusCases(): Case[] {
  const be32 = u32;
  // Kafka ApiVersions request v3: size, api_key 18, api_version 3, correlation id, client id "console"
  const kafkaReq = (() => { const body = cat(u16(18), u16(3), u32(1), u16(7), B('console'), hex('00')); return cat(u32(body.length), body); })();
  const kafkaResp = cat(u32(10), u32(1), u16(0), hex('00000000'));
  // OpenFlow 1.3 HELLO (type 0, length 16) with a versionbitmap element
  const ofHello = cat(hex('04 00'), u16(16), u32(7), hex('0001 0008 00000010'));
  // BFD control, version 1, state Up, detect mult 3, length 24
  const bfd = cat(hex('20 c0 03 18'), u32(1), u32(2), u32(1000000), u32(1000000), u32(0));
  // LDP Hello over UDP: version 1, PDU length, LSR id, label space, Hello message
  const ldpBody = cat(hex('c0a80001 0000'), hex('0100'), u16(20), u32(1), hex('0400 0004 000f 0000'), hex('0401 0004 c0a80001'));
  const ldp = cat(hex('0001'), u16(ldpBody.length), ldpBody);
  // PTPv2 Sync (messageType 0, version 2, length 44)
  const ptp = cat(hex('00 02'), u16(44), hex('00 00 0000'), fill(8, 0), fill(4, 0), fill(10, 0x11), u16(1), hex('00 00'), fill(10, 0));
  // PFCP Heartbeat Request: version 1 (0x20), type 1, length, sequence, spare, Recovery Time Stamp IE
  const pfcpBody = cat(hex('000001 00'), hex('0060 0004'), u32(0xe5a1b2c3));
  const pfcp = cat(hex('20 01'), u16(pfcpBody.length), pfcpBody);
  // SLPv2 Service Request: version 2, function 1, length, flags, next ext, XID, language "en"
  const slpBody = cat(hex('2000 000000'), u16(7), u16(2), B('en'), u16(0), u16(20), B('service:printer:lpr'), hex('00'), u16(7), B('DEFAULT'), u16(0), u16(0));
  const slp = (() => { const n = 2 + 3 + slpBody.length; const b = cat(hex('02 01'), Buffer.from([n >> 16, (n >> 8) & 255, n & 255]), slpBody); return b; })();
  // BFCP v1 Hello (primitive 11) with no attributes: payload length 0
  const bfcp = cat(hex('20 0b 0000'), u32(0x11), u16(1), u16(2));
  // BFCP FloorRequest (primitive 1) with a FLOOR-ID attribute (one word)
  const bfcp2 = cat(hex('20 01 0001'), u32(0x11), u16(2), u16(2), hex('0404 0001'));
  // KNXnet/IP SEARCH_REQUEST: header 06 10 0201, length 14, HPAI
  const knx = cat(hex('06 10 0201 000e'), hex('0801 c0a80001 0e57'));
  // AMS/TCP + AMS header (32 bytes) + ADS Read Device Info (no data)
  const amsHdr = cat(fill(6, 0x05), u16(0x5303), fill(6, 0x06), u16(0x8000), hex('0100 0400'), le32(0), le32(0), le32(1));
  const ams = cat(hex('0000'), le32(amsHdr.length), amsHdr);
  // C37.118 command frame: SYNC aa 41 (command, version 1), FRAMESIZE 18, IDCODE, SOC, FRACSEC, CMD 2, CHK
  const c37 = cat(hex('aa41'), u16(18), u16(1), u32(1700000000), u32(0), u16(2), u16(0xabcd));
  return [
    { app: 'Kafka', kind: 'tcp', sport: 9092, msgs: [['c2s', kafkaReq], ['s2c', kafkaResp]] },
    { app: 'Kafka', kind: 'tcp', sport: 9092, msgs: [['s2c', kafkaResp]], note: 'a response first' },
    { app: 'Ceph', kind: 'tcp', sport: 6789, msgs: [['s2c', cat(B('ceph v027'), fill(136, 0))]] },
    { app: 'Ceph', kind: 'tcp', sport: 3300, msgs: [['c2s', cat(B('ceph v2\n'), u16(16), fill(16, 0))]], note: 'msgr2 on 3300' },
    { app: 'STOMP', kind: 'tcp', sport: 61613, msgs: [['c2s', B('CONNECT\naccept-version:1.2\nhost:broker\n\n\0')], ['s2c', B('CONNECTED\nversion:1.2\n\n\0')]] },
    { app: 'STOMP', kind: 'tcp', sport: 61000, msgs: [['c2s', B('STOMP\r\naccept-version:1.2\r\nhost:b\r\n\r\n\0')]], note: 'STOMP frame, CRLF' },
    { app: 'OpenWire', kind: 'tcp', sport: 61616, msgs: [['c2s', cat(u32(250), hex('01'), B('ActiveMQ'), u32(12), fill(20, 0))]] },
    { app: 'Gearman', kind: 'tcp', sport: 4730, msgs: [['c2s', cat(hex('00'), B('REQ'), u32(7), u32(8), B('reverse\0'))]] },
    { app: 'JRMI', kind: 'tcp', sport: 1099, msgs: [['c2s', cat(B('JRMI'), hex('0002 4b'))]] },
    { app: 'HAProxy', kind: 'tcp', sport: 8110, msgs: [['c2s', cat(hex('0d0a0d0a000d0a515549540a'), hex('21 11'), u16(12), hex('7f000001 7f000001 ebdc 1fae'))]] },
    { app: 'HAProxy', kind: 'tcp', sport: 8080, msgs: [['c2s', B('PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\nGET / HTTP/1.1\r\n\r\n')]], note: 'v1 before HTTP' },
    { app: 'OpenFlow', kind: 'tcp', sport: 6653, msgs: [['c2s', ofHello]] },
    { app: 'HL7', kind: 'tcp', sport: 2575, msgs: [['c2s', cat(hex('0b'), B('MSH|^~\\&|APP|FAC|RCV|RF|20240101||ADT^A01|1|P|2.5\r'), hex('1c0d'))]] },
    { app: 'DICOM', kind: 'tcp', sport: 104, msgs: [['c2s', cat(hex('0100'), u32(68), hex('0001 0000'), B('STORESCP        '), B('STORESCU        '), fill(32, 0))]] },
    { app: 'Roughtime', kind: 'udp', sport: 2002, msgs: [['c2s', cat(B('ROUGHTIM'), le32(1024), fill(1024, 0))]] },
    { app: 'BITCOIN', kind: 'tcp', sport: 8333, msgs: [['c2s', cat(hex('f9beb4d9'), B('version\0\0\0\0\0'), le32(100), hex('aabbccdd'), fill(100, 0))]] },
    { app: 'BFD', kind: 'udp', sport: 3784, cport: 49152, msgs: [['c2s', bfd]] },
    { app: 'GLBP', kind: 'udp', sport: 3222, cport: 3222, msgs: [['c2s', cat(hex('01 00 0001 0000'), hex('020000000001'), hex('01 1c 00 00'), fill(24, 0))]] },
    { app: 'LDP', kind: 'udp', sport: 646, cport: 646, msgs: [['c2s', ldp]] },
    { app: 'PTPv2', kind: 'udp', sport: 319, cport: 319, msgs: [['c2s', ptp]] },
    { app: 'PFCP', kind: 'udp', sport: 8805, msgs: [['c2s', pfcp]] },
    { app: 'RMCP', kind: 'udp', sport: 623, msgs: [['c2s', cat(hex('06 00 ff 06'), u32(4542), hex('80 00 00 00'))]], note: 'ASF presence ping' },
    { app: 'Service_Location_Protocol', kind: 'udp', sport: 427, msgs: [['c2s', slp]] },
    { app: 'DLEP', kind: 'udp', sport: 854, msgs: [['c2s', cat(B('DLEP'), u16(1), u16(0))]] },
    { app: 'CPHA', kind: 'udp', sport: 8116, cport: 8116, msgs: [['c2s', cat(hex('1a90 0002'), fill(40, 0))]] },
    { app: 'BFCP', kind: 'tcp', sport: 50500, msgs: [['c2s', bfcp2], ['s2c', bfcp]] },
    { app: 'BFCP', kind: 'udp', sport: 50600, msgs: [['c2s', bfcp]] },
    { app: 'Oscar', kind: 'tcp', sport: 5190, msgs: [['s2c', cat(hex('2a01 1234'), u16(4), u32(1))]] },
    { app: 'KNXnet_IP', kind: 'udp', sport: 3671, msgs: [['c2s', knx]] },
    { app: 'EthernetGlobalData', kind: 'udp', sport: 18246, cport: 18246, msgs: [['c2s', cat(hex('0d01'), u16(1), u32(0xc0a80801), u32(1), u32(0), u32(0), u32(0), fill(60, 0))]] },
    { app: 'MELSEC', kind: 'tcp', sport: 5007, msgs: [['c2s', hex('5000 00 ff ff03 00 0c00 1000 0104 0000 640000 a8 0a00')]] },
    { app: 'BeckhoffADS', kind: 'tcp', sport: 48898, msgs: [['c2s', ams]] },
    { app: 'ANSI_C1222', kind: 'tcp', sport: 1153, msgs: [['c2s', cat(hex('60 1e a2 04 06 02 7b 00 a6 04 06 02 7b 01'), hex('be 0e 28 0c 81 0a'), fill(10, 0x30))]] },
    { app: 'FINS', kind: 'udp', sport: 9600, msgs: [['c2s', hex('80 00 02 00 01 00 00 0a 00 01 0101 82 0000 00 0001')]] },
    { app: 'FINS', kind: 'tcp', sport: 9600, msgs: [['c2s', cat(B('FINS'), u32(12), u32(0), u32(0), u32(0))]] },
    { app: 'HiSLIP', kind: 'tcp', sport: 4880, msgs: [['c2s', cat(B('HS'), hex('00 00'), hex('0100 0000'), fill(4, 0), u32(0), u32(4), B('inst'))]] },
    { app: 'IEEE-C37118', kind: 'tcp', sport: 4712, msgs: [['c2s', c37]] },
    { app: 'RTPS', kind: 'udp', sport: 7400, msgs: [['c2s', cat(B('RTPS'), hex('0203 010f'), fill(12, 0x44), hex('0e01 0c00'), fill(12, 0x44))]] },
    { app: 'ATG', kind: 'tcp', sport: 10001, msgs: [['c2s', cat(hex('01'), B('I20100'))]] },
    // uTP: SYN (type 4, recv_id 0x1234, seq 1), then the STATE reply with the same id acking it
    { app: 'BitTorrent', kind: 'udp', sport: 51413, cport: 50321, msgs: [['c2s', cat(hex('41 00 1234'), u32(1000), u32(0), u32(0x100000), u16(1), u16(0))], ['s2c', cat(hex('21 00 1234'), u32(2000), u32(1000), u32(0x100000), u16(77), u16(1))]], note: 'uTP handshake' },
    { app: 'BitTorrent', kind: 'udp', sport: 40959, cport: 64969, msgs: [['c2s', cat(hex('01 00 5679'), u32(1), u32(2), u32(0x100000), u16(9), u16(3), hex('13'), B('BitTorrent protocol'), fill(48, 0))], ['s2c', cat(hex('21 00 5678'), u32(3), u32(4), u32(0x100000), u16(4), u16(9))]], note: 'uTP midstream: ids differ by one' },
    // RFC 3489 Binding Request with CHANGE-REQUEST (type 3, 4 bytes), and its response with MAPPED-ADDRESS
    { app: 'STUN', kind: 'udp', sport: 40100, msgs: [['c2s', cat(hex('0001 0008'), fill(16, 0x5b), hex('0003 0004 00000000'))], ['s2c', cat(hex('0101 000c'), fill(16, 0x5b), hex('0001 0008 0001 1f90 c0000201'))]], note: 'RFC 3489, no magic cookie' },
    // OpenVPN hard resets on 443/udp: client session id 1122334455667788, the server's reply acks it
    { app: 'OpenVPN', kind: 'udp', sport: 443, msgs: [['c2s', cat(hex('38 1122334455667788 00 00000000'), fill(6, 0))], ['s2c', cat(hex('40 99aabbccddeeff00 01 00000000 1122334455667788 00000000'))]], note: 'hard resets on 443' },
    { app: 'OpenVPN', kind: 'tcp', sport: 8443, msgs: [['c2s', cat(u16(14), hex('38 1122334455667788 00 00000000'))], ['s2c', cat(u16(26), hex('40 99aabbccddeeff00 01 00000000 1122334455667788 00000000'))]], note: 'hard resets over TCP' },
    { app: 'Monero', kind: 'tcp', sport: 18080, msgs: [['c2s', cat(hex('0121010101010101'), Buffer.from([226, 0, 0, 0, 0, 0, 0, 0]), hex('01'), le32(1001), le32(0), le32(1), fill(226, 0))]] },
    { app: 'IEC62056', kind: 'tcp', sport: 4059, msgs: [['c2s', cat(hex('0001 0010 0001'), u16(8), hex('6006a1060604 6050'))]] },
    // Thrift: a framed strict-binary call "getDevice", and Jaeger's compact oneway emitBatch over UDP
    { app: 'Thrift', kind: 'tcp', sport: 11010, msgs: [['c2s', (() => { const m = cat(hex('80010001'), u32(9), B('getDevice'), u32(1), hex('00')); return cat(u32(m.length), m); })()]], note: 'framed binary' },
    { app: 'Thrift', kind: 'udp', sport: 6831, msgs: [['c2s', cat(hex('82 81 01 09'), B('emitBatch'), hex('1c1c'), fill(40, 0))]], note: 'compact, oneway' },
    { app: 'Syslog', kind: 'tcp', sport: 514, msgs: [['c2s', B('<13>Oct 11 22:14:15 host app: over tcp\n')]], note: 'TCP, not RSH' },
    { app: 'WhatsApp', kind: 'tcp', sport: 443, msgs: [['c2s', cat(B('WA'), hex('0602'), hex('0000'), u16(40), fill(40, 0x66))]], note: 'WA prologue on 443' },
    { app: 'WhatsApp', kind: 'tcp', sport: 5222, msgs: [['c2s', cat(B('ED'), hex('0001'), u16(36), fill(36, 0x67))]], note: 'Noise prologue' },
    { app: 'S7CommPlus', kind: 'tcp', sport: 102, msgs: [['c2s', tpkt(cat(hex('02f080 72 01'), u16(20), fill(20, 0)))]] },
    { app: 'CIP', kind: 'udp', sport: 2222, msgs: [['c2s', cat(hex('0200 0280 0800'), u32(0x12345678), u32(1), hex('b100'), u16(6), u16(1), fill(4, 0))]] },
    { app: 'DNScrypt', kind: 'udp', sport: 443, msgs: [['c2s', fill(256, 0x5c)], ['s2c', cat(B('r6fnvWj8'), fill(12, 0x31), fill(100, 0x5d))]], note: 'the resolver magic' },
    { app: 'WorldOfWarcraft', kind: 'tcp', sport: 3725, msgs: [['s2c', cat(u16(0x30), B('WORLD OF WARCRAFT CONNECTION - SERVER TO CLIENT\0'))]] },
    // DCE/RPC bind (type 11) to the endpoint mapper's interface, little-endian, on a dynamic port
    { app: 'DCERPC', kind: 'tcp', sport: 49667, msgs: [['c2s', cat(hex('05 00 0b 03 10000000'), Buffer.from([72, 0]), hex('0000 01000000 b810 b810 00000000 01000000 0000 0100'), fill(16, 0x08), hex('0300 0000'), fill(16, 0x04), hex('0200 0000'))]] },
    { app: 'DCERPC', kind: 'udp', sport: 34964, msgs: [['c2s', cat(hex('04 00 20 00 10 00 00 00'), fill(66, 0x01), Buffer.from([8, 0]), hex('0000 0000'), fill(8, 0x02))]], note: 'connectionless' },
    { app: 'AVASTSecureDNS', kind: 'udp', sport: 443, msgs: [['c2s', dns({ id: 0x4d2, questions: [{ name: 'x1.sEcUREdNS.avast.com', type: 'A' }] })]], note: 'a DNS query to 443' },
    { app: 'SD-RTN', kind: 'udp', sport: 8130, msgs: [['c2s', cat(hex('0a00 0001'), fill(20, 0x00), B('104-166-161-75.edge.agora.io'), B('PDMD'), fill(40, 0x11))]] },
    { app: 'Controller_Area_Network', kind: 'udp', sport: 11898, msgs: [['c2s', cat(B('ISO11898'), hex('01 02'), le32(0x123), hex('08 00 00 00'), fill(8, 0x11), le32(0x124), hex('02 00 00 00'), fill(8, 0x22))]] },
    // Armagetron: a server-info request (descriptor 0x35, id 1, no data) and sender id 0, to a server on 4540
    { app: 'Armagetron', kind: 'udp', sport: 4540, msgs: [['c2s', hex('0035 0001 0000 0000')], ['s2c', cat(hex('0033 0002'), u16(4), fill(8, 0x41), hex('0001'))]] },
    { app: 'IEC62056', kind: 'tcp', sport: 4060, msgs: [['c2s', cat(hex('0001 0010 0001'), u16(8), hex('6006a1060604 6050'))]], note: 'another port' },
    { app: 'EAQ', kind: 'udp', sport: 6000, msgs: [['c2s', cat(u32(1), u32(0x5567a1b2), fill(8, 0))]] },
    // Skype's UDP to a supernode: 2-byte ID, FUNC 0x02, the rest obfuscated; a 3-byte resend request
    { app: 'Skype_Teams', kind: 'udp', sport: 40001, cport: 13021, msgs: [['c2s', cat(hex('9c4e 02'), fill(21, 0xd7))]] },
    { app: 'Skype_Teams', kind: 'udp', sport: 33033, cport: 13022, msgs: [['c2s', hex('41a7 4d')]], note: '3-byte resend request' },
  ];
}

// ---------------------------------------------------------------- signature file

interface Parsed { hosts: Map<string, string[]>; ports: Map<string, Array<['tcp' | 'udp', number]>> }
/** The signature file read here, independently: host lists and pure port rules per name. */
function parseSigs(text: string): Parsed {
  const hosts = new Map<string, string[]>();
  const ports = new Map<string, Array<['tcp' | 'udp', number]>>();
  for (const line of text.split('\n')) {
    const m = /^\s*\d*\s*([^:#[]+?)\s*:\s*\[(.*)\]\s*$/.exec(line);
    if (!m) continue;
    const name = m[1];
    for (const feat of m[2].split(',')) {
      const f = feat.split(';').map((s) => s.trim());
      if (f.every((x) => x === '')) continue;
      const [proto, sport, dport, host, bytes, opts] = [f[0] ?? '', f[1] ?? '', f[2] ?? '', f[3] ?? '', f[4] ?? '', f[5] ?? ''];
      if (host && !bytes && !sport && !dport && !opts) hosts.set(name, [...(hosts.get(name) ?? []), ...host.split(/\s+/)]);
      if (!host && !bytes && !opts && (sport || dport)) {
        const [a, b] = (dport || sport).split('-').map(Number);
        for (const k of proto ? [proto] : ['tcp', 'udp']) {
          for (let p = a; p <= (b ?? a) && p < a + 4; p++) ports.set(name, [...(ports.get(name) ?? []), [k as 'tcp' | 'udp', p]]);
        }
      }
    }
  }
  return { hosts, ports };
}
function allNames(text: string): string[] {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*\d*\s*([^:#[]+?)\s*:\s*\[/.exec(line);
    if (m) out.add(m[1]);
  }
  return [...out];
}

/** Hand cases, then a host-list case (TLS with SNI) or a port case for every other name. */
function allCases(): Case[] {
  const cases = handCases();
  const have = new Set(cases.map((c) => c.app));
  const { hosts, ports } = parseSigs(SIGS);
  for (const name of allNames(SIGS)) {
    if (have.has(name)) continue;
    const h = hosts.get(name);
    const p = ports.get(name);
    if (h) cases.push({ app: name, kind: 'tcp', sport: 443, master: 'TLS', msgs: [['c2s', clientHello(`edge.${h[0]}`)]], note: 'host list' });
    else if (p) cases.push({ app: name, kind: p[0][0], sport: p[0][1], msgs: [['c2s', fill(24, 0x7a)]], note: 'port rule' });
  }
  return cases;
}

// ---------------------------------------------------------------- capture

const CLIENT_MAC = '02:00:00:00:00:0a';
const SERVER_MAC = '02:00:00:00:00:50';

function writeCases(cases: Case[], file: string): Map<string, number> {
  const w = new PcapFileWriter(file);
  let us = 1_700_000_000 * 1e6;
  const idx = new Map<string, number>();
  cases.forEach((c, i) => {
    const cip = c.cip ?? `10.1.${(i >> 8) & 255}.${i & 255}`;
    const sip = c.sip ?? `10.2.${(i >> 8) & 255}.${i & 255}`;
    const cport = c.cport ?? 20000 + i;
    idx.set(`${cip}|${c.kind}`, i);
    const put = (frame: Buffer) => { w.write(Math.floor(us / 1e6), us % 1e6, frame); us += 1000; };
    if (c.kind === 'tcp') {
      const f = new TcpFlow({ client: { mac: CLIENT_MAC, ip: cip, port: cport, isn: 1000 + i }, server: { mac: SERVER_MAC, ip: sip, port: c.sport, isn: 5000 + i } });
      for (const p of f.handshake()) put(p.frame);
      for (const [d, b] of c.msgs) for (const p of f.send(d === 'c2s' ? 'client' : 'server', b)) put(p.frame);
      for (const p of f.close()) put(p.frame);
    } else {
      for (const [d, b] of c.msgs) {
        const [a, z, ap, zp, am, zm] = d === 'c2s' ? [cip, sip, cport, c.sport, CLIENT_MAC, SERVER_MAC] : [sip, cip, c.sport, cport, SERVER_MAC, CLIENT_MAC];
        put(ethernet({ src: am, dst: zm, type: ETHERTYPE.IPV4 }, ipv4({ src: a, dst: z, proto: IPPROTO.UDP }, udp({ src: a, dst: z, sport: ap, dport: zp }, b))));
      }
    }
    us += 1e6;
  });
  w.close();
  return idx;
}

function records(stdout: Buffer): Rec[] {
  return stdout.toString('utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Rec);
}
function runLua(lua: string, pcap: string, extra: Record<string, string> = {}) {
  const dir = tree({ 'test.lua': lua, ...extra });
  const r = riff(['-q', '--workers', '1', '--lua', path.join(dir, 'test.lua'), '-r', pcap, '-o', 'json:-']);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /[1-9]\d* Lua errors/, r.stderr);
  return { recs: records(r.stdout), stderr: r.stderr };
}

const label = (c: Case) => `${c.app} (${c.kind}/${c.sport}${c.note ? `, ${c.note}` : ''})`;

describe('plugin.app_id on crafted flows', () => {
  const cases = allCases();
  const pcap = path.join(tmpdir(), 'apps.pcap');
  writeCases(cases, pcap);
  const appOf = (recs: Rec[]) => {
    const m = new Map<string, Rec>();
    for (const r of recs) if (r.type === 'app') m.set(`${r.client_ip === undefined ? '' : r.client_ip}|${r.proto}`, r);
    return m;
  };

  test('the signature file names at least 150 applications, each with a crafted flow here', () => {
    const names = allNames(SIGS);
    assert.ok(names.length >= 150, `${names.length} names`);
    const covered = new Set(cases.map((c) => c.app));
    assert.deepEqual(names.filter((n) => !covered.has(n)), []);
  });

  test('each crafted flow is named as its specification says', () => {
    const { recs, stderr } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', pcap);
    const got = appOf(recs);
    const wrong: string[] = [];
    cases.forEach((c, i) => {
      const cip = c.cip ?? `10.1.${(i >> 8) & 255}.${i & 255}`;
      // A flow whose client is the side that sent first (UDP replies from a
      // well-known port flip it): look the record up by either address.
      const sip = c.sip ?? `10.2.${(i >> 8) & 255}.${i & 255}`;
      const r = got.get(`${cip}|${c.kind}`) ?? got.get(`${sip}|${c.kind}`);
      const app = r?.app ?? '(none)';
      if (app !== c.app || (c.master && r?.master !== c.master)) wrong.push(`${label(c)}: got ${app}${r?.master ? ` via ${r.master}` : ''}`);
    });
    assert.deepEqual(wrong, []);
    assert.match(stderr, /app_id: \d+ flows named/);
  });

  test('no two signatures claim the same crafted flow', () => {
    const lua = `
local app_id = require "plugin.app_id"
local shared = require "flow.shared"
local current = require "proto.current"
local p = {}
function p:setup()
  shared.on("close", function(c, kind)
    local pl = c.user.pl
    if not pl then return end
    local claims = app_id.claims(kind, c.client_port, c.server_port, pl)
    local by, port = {}, {}
    for name, how in pairs(claims) do if how == "bytes" then by[#by + 1] = name else port[#port + 1] = name end end
    table.sort(by) table.sort(port)
    riff.emit("claims", { client_ip = c.client_ip, server_ip = c.server_ip, proto = kind, bytes = table.concat(by, ","), ports = table.concat(port, ",") })
  end)
end
function p:push(s)
  local pkt = current(s)
  local c = shared.packet(pkt)
  if not c or pkt.payload_end < pkt.payload_offset then return end
  local pl = c.user.pl or {}
  c.user.pl = pl
  if #pl < 8 then pl[#pl + 1] = { c.dir, pkt.payload } end
end
function p:deinit() shared.flush() end
return { app_id, p }`;
    const { recs } = runLua(lua, pcap);
    const claims = new Map<string, Rec>();
    for (const r of recs) if (r.type === 'claims') { claims.set(`${r.client_ip}|${r.proto}`, r); claims.set(`${r.server_ip}|${r.proto}`, r); }
    const bad: string[] = [];
    cases.forEach((c, i) => {
      const r = claims.get(`${c.cip ?? `10.1.${(i >> 8) & 255}.${i & 255}`}|${c.kind}`);
      if (!r) { bad.push(`${label(c)}: no flow`); return; }
      const by = r.bytes ? r.bytes.split(',') : [];
      const want = c.master ?? c.app;
      if (by.length > 1) bad.push(`${label(c)}: byte signatures of ${by.join(' and ')} all match`);
      else if (by.length === 1 && by[0] !== want) bad.push(`${label(c)}: claimed by ${by[0]}`);
      else if (by.length === 0 && r.ports !== want && c.cport === undefined) bad.push(`${label(c)}: port rule of ${r.ports || 'nobody'}`);
    });
    assert.deepEqual(bad, []);
  });

  test('host lists and port rules: no domain or port is listed under two names', () => {
    const { hosts, ports } = parseSigs(SIGS);
    const owner = new Map<string, string>();
    const dup: string[] = [];
    for (const [name, hs] of hosts) for (const h of hs) {
      const o = owner.get(h);
      if (o && o !== name) dup.push(`${h}: ${o} and ${name}`);
      owner.set(h, name);
    }
    for (const [name, ps] of ports) for (const [k, p] of ps) {
      const key = `${k}/${p}`;
      const o = owner.get(key);
      if (o && o !== name) dup.push(`${key}: ${o} and ${name}`);
      owner.set(key, name);
    }
    assert.deepEqual(dup, []);
  });
});

describe('plugin.app_id: flows announced by other flows, host lists, limits', () => {
  test('TFTP data on ephemeral ports after a request; FTP data after PASV and PORT', () => {
    const file = path.join(tmpdir(), 'expect.pcap');
    const w = new PcapFileWriter(file);
    const put = framesInTurn(w);
    const u = (a: string, z: string, ap: number, zp: number, b: Buffer) => put(ethernet({ src: CLIENT_MAC, dst: SERVER_MAC, type: ETHERTYPE.IPV4 }, ipv4({ src: a, dst: z, proto: IPPROTO.UDP }, udp({ src: a, dst: z, sport: ap, dport: zp }, b))));
    u('10.9.0.1', '10.9.0.2', 40001, 69, B('\0\x01boot.img\0octet\0'));
    u('10.9.0.2', '10.9.0.1', 50123, 40001, cat(hex('00030001'), fill(512, 0x41)));
    u('10.9.0.1', '10.9.0.2', 40001, 50123, hex('00040001'));
    // the same data datagram with no request before it: not TFTP
    u('10.9.0.1', '10.9.0.3', 40002, 50124, cat(hex('00030001'), fill(512, 0x41)));
    const ctl = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.9.1.1', port: 41000, isn: 1 }, server: { mac: SERVER_MAC, ip: '10.9.1.2', port: 21, isn: 2 } });
    for (const p of [...ctl.handshake(), ...ctl.send('server', B('220 ready\r\n')), ...ctl.send('client', B('PASV\r\n')),
      ...ctl.send('server', B('227 Entering Passive Mode (10,9,1,2,195,80)\r\n')), ...ctl.send('client', B('PORT 10,9,1,1,160,100\r\n'))]) put(p.frame);
    const pasv = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.9.1.1', port: 41001, isn: 3 }, server: { mac: SERVER_MAC, ip: '10.9.1.2', port: 50000, isn: 4 } });
    for (const p of [...pasv.handshake(), ...pasv.send('server', fill(300, 0x55)), ...pasv.close()]) put(p.frame);
    const act = new TcpFlow({ client: { mac: SERVER_MAC, ip: '10.9.1.2', port: 20, isn: 5 }, server: { mac: CLIENT_MAC, ip: '10.9.1.1', port: 41060, isn: 6 } });
    for (const p of [...act.handshake(), ...act.send('client', fill(300, 0x56)), ...act.close()]) put(p.frame);
    for (const p of ctl.close()) put(p.frame);
    w.close();
    const { recs } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', file);
    const apps = recs.filter((r) => r.type === 'app').map((r) => `${r.client_ip}:${r.client_port}-${r.server_ip}:${r.server_port} ${r.app} ${r.by}`);
    assert.deepEqual(apps.sort(), [
      '10.9.0.1:40001-10.9.0.2:69 TFTP bytes',
      '10.9.0.2:50123-10.9.0.1:40001 TFTP expect',
      '10.9.1.1:41000-10.9.1.2:21 FTP_CONTROL bytes',
      '10.9.1.1:41001-10.9.1.2:50000 FTP_DATA expect',
      '10.9.1.2:20-10.9.1.1:41060 FTP_DATA expect',
    ].sort());
  });

  test('a TLS flow to a listed host is the host\'s app with TLS as master; riff\'s old names still load', () => {
    const file = path.join(tmpdir(), 'hosts.pcap');
    const cs: Case[] = [
      { app: 'YouTube', kind: 'tcp', sport: 443, msgs: [['c2s', clientHello('rr3---sn-4g5e6nze.googlevideo.com')]] },
      { app: 'GoogleMaps', kind: 'tcp', sport: 443, msgs: [['c2s', clientHello('maps.google.com')]] },
      { app: 'Google', kind: 'tcp', sport: 443, msgs: [['c2s', clientHello('www.google.com')]] },
      { app: 'TLS', kind: 'tcp', sport: 443, msgs: [['c2s', clientHello('notgoogle.com')]] },
      { app: 'NetFlix', kind: 'tcp', sport: 80, msgs: [['c2s', B('GET /x HTTP/1.1\r\nHost: ipv4-c001.1.nflxvideo.net\r\n\r\n')]] },
    ];
    writeCases(cs, file);
    const { recs } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', file);
    const apps = recs.filter((r) => r.type === 'app').map((r) => [r.app, r.master ?? null, r.server_name]);
    assert.deepEqual(apps, [
      ['YouTube', 'TLS', 'rr3---sn-4g5e6nze.googlevideo.com'],
      ['GoogleMaps', 'TLS', 'maps.google.com'],
      ['Google', 'TLS', 'www.google.com'],
      ['TLS', null, 'notgoogle.com'],
      ['NetFlix', 'HTTP', 'ipv4-c001.1.nflxvideo.net'],
    ]);
    const old = 'SMB: [tcp;;445;;]\nFTP: [tcp;;21;;]\nmDNS: [udp;;5353;;]\n';
    const lua = 'local a = require "plugin.app_id" a.signatures = "old.txt" return { a, { push = function() end, deinit = function() riff.emit("names", { n = table.concat(a.names(), ",") }) end } }';
    const r2 = runLua(lua, file, { 'old.txt': old });
    assert.equal(r2.recs.find((r) => r.type === 'names')!.n, 'FTP_CONTROL,MDNS,SMBv23');
  });

  test('a flow no signature names is tried 4 payload packets each way, then given up', () => {
    const file = path.join(tmpdir(), 'giveup.pcap');
    const msgs: Array<[Dir, Buffer]> = [];
    for (let i = 0; i < 6; i++) { msgs.push(['c2s', fill(30, 0x7a)]); msgs.push(['s2c', fill(30, 0x7b)]); }
    // the 5th client packet would be TLS: too late
    msgs.splice(8, 0, ['c2s', tlsAppData()]);
    // ports no rule lists (either port is the port guess's: 50000 is DRDA's)
    writeCases([{ app: '', kind: 'tcp', sport: 45000, cport: 45001, msgs }], file);
    const { recs, stderr } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', file);
    assert.equal(recs.filter((r) => r.type === 'app').length, 0);
    assert.match(stderr, /app_id: 0 flows named, 1 given up after 4 payload packets each way/);
    const file2 = path.join(tmpdir(), 'late.pcap');
    const m2 = msgs.slice(0, 6);
    m2.push(['c2s', tlsAppData()]);
    writeCases([{ app: '', kind: 'tcp', sport: 45000, cport: 45001, msgs: m2 }], file2);
    const r2 = runLua('return { require "plugin.sessions", require "plugin.app_id" }', file2);
    assert.deepEqual(r2.recs.filter((r) => r.type === 'app').map((r) => [r.app, r.packet]), [['TLS', 4]]);
  });
});

// ---------------------------------------------------------------- encapsulations

describe('proto.packet encapsulations: inner flows are flows', () => {
  const samples = encapSamples();
  const cases = samples.map((x) => [x.name, x.linktype, x.frame, x.encap, x.src, x.sport, x.dport] as const);
  const eth = (type: number, payload: Buffer) => ethernet({ src: CLIENT_MAC, dst: SERVER_MAC, type }, payload);
  const outer4 = (proto: number, payload: Buffer) => ipv4({ src: '203.0.113.1', dst: '203.0.113.2', proto }, payload);

  test('each encapsulation is decoded to its inner packet (pkt.encap names it)', () => {
    const out: string[] = [];
    for (const [name, lt, frame, encap, src, sport, dport] of cases) {
      const file = path.join(tmpdir(), 'encap.pcap');
      const w = new PcapFileWriter(file, { linktype: lt });
      w.write(1_700_000_000, 0, frame);
      w.close();
      const lua = `local current = require "proto.current"
return { { push = function(_, s) local p = current(s) local t = p.tcp
  riff.emit("p", { encap = p.encap or "", src = p.ip and p.ip.src or "", sport = t and t.sport or 0, dport = t and t.dport or 0 }) end } }`;
      const { recs } = runLua(lua, file);
      const r = recs.find((x) => x.type === 'p')!;
      const got = `${r.encap}|${r.src}|${r.sport}|${r.dport}`;
      const want = `${encap}|${src}|${sport}|${dport}`;
      if (got !== want) out.push(`${name}: got ${got}, want ${want}`);
    }
    assert.deepEqual(out, []);
  });

  test('inner flows are sessions; what is not decoded is counted by EtherType, IP protocol, link type', () => {
    const file = path.join(tmpdir(), 'encap-all.pcap');
    const w = new PcapFileWriter(file, { linktype: 1 });
    let s = 1_700_000_000;
    for (const [, lt, frame] of cases) if (lt === 1) w.write(s++, 0, frame);
    w.write(s++, 0, eth(0x88e5, cat(hex('2c 00'), u32(1), fill(8, 0x11), fill(60, 0x42)))); // MACsec, encrypted
    w.write(s++, 0, eth(ETHERTYPE.IPV4, outer4(89, fill(40, 0)))); // OSPF
    w.write(s++, 0, eth(0x88cc, fill(40, 0))); // LLDP
    w.close();
    const { recs, stderr } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', file);
    const keys = recs.filter((r) => r.type === 'tcp_session').map((r) => `${r.client_port}-${r.server_port}`).sort();
    const want = cases.filter(([, lt]) => lt === 1).map(([, , , , , sp, dp]) => `${sp}-${dp}`).sort();
    assert.deepEqual(keys, want);
    assert.match(stderr, /3 packets not decoded to TCP\/UDP\/ICMP \(ethertype 0x88cc: 1, ethertype 0x88e5: 1, ipproto 89: 1\)/);
  });

  test("the not-decoded line stays one short line: the most frequent kinds first, numbers in order, the rest summed", () => {
    const dir = tree({
      'u.lua': `local et = {}
for i = 1, 300 do et[string.format("0x%04x", i)] = 1 end
et["0x9000"] = 50
print(require("proto.current").undecoded_text { linktype = {}, ethertype = et, ipproto = { [100] = 2, [10] = 2, [9] = 2 }, truncated = 0, malformed = 0, total = 356 })
buffer = function() end
`,
    });
    const r = riff(['-q', '--lua', path.join(dir, 'u.lua'), '-r', path.join(FIXTURES, 'http.pcap')]);
    assert.equal(r.code, 0, r.stderr);
    const line = String(r.stdout).trim();
    assert.ok(line.length < 400, line);
    assert.match(line, /^356 packets not decoded to TCP\/UDP\/ICMP \(ethertype 0x9000: 50, ipproto 9: 2, ipproto 10: 2, ipproto 100: 2, ethertype 0x0001: 1, /);
    assert.match(line, /, 292 other kinds: 292\)$/);
  });
});

// ---------------------------------------------------------------- real captures

test('tcpdump corpus captures: QUIC (its SNI), IPSec, DHCPV6, and flows inside Geneve and MPLS named', () => {
  const want: Array<[string, string, number]> = [
    ['gquic.pcap', 'GoogleServices', 443], // gQUIC Q046's cleartext CHLO: SNI clientservices.googleapis.com, master QUIC
    ['geneve.pcap', 'SSH', 22], // inside Geneve
    ['lspping-fec-ldp.pcap', 'BGP', 179], // inside MPLS over PPP
    ['isakmp4500.pcap', 'IPSec', 4500],
    ['ikev2four.pcap', 'IPSec', 500],
    ['dhcpv6-ntp-server.pcap', 'DHCPV6', 546],
  ];
  const bad: string[] = [];
  for (const [file, app, port] of want) {
    const { recs } = runLua('return { require "plugin.sessions", require "plugin.app_id" }', path.join(ROOT, 'fixtures', 'corpus', file));
    const apps = recs.filter((r) => r.type === 'app');
    if (!apps.some((r) => r.app === app && r.server_port === port)) bad.push(`${file}: ${JSON.stringify(apps.map((r) => [r.app, r.server_port]))}`);
  }
  assert.deepEqual(bad, []);
});

describe('plugin.app_id: the weak heuristics stay where they belong', () => {
  test("Skype's UDP start-of-message is tried on a direction's first packet only and off the ports other signatures own; uTP needs both directions' connection ids", () => {
    const file = path.join(tmpdir(), 'weak.pcap');
    const w = new PcapFileWriter(file);
    const put = framesInTurn(w);
    const u = (a: string, z: string, ap: number, zp: number, b: Buffer) => put(ethernet({ src: CLIENT_MAC, dst: SERVER_MAC, type: ETHERTYPE.IPV4 }, ipv4({ src: a, dst: z, proto: IPPROTO.UDP }, udp({ src: a, dst: z, sport: ap, dport: zp }, b))));
    const skype = cat(hex('9c4e 02'), fill(21, 0xd7));
    u('10.7.0.1', '10.7.0.2', 41000, 5353, skype); // MDNS's port: its port rule names it
    u('10.7.0.3', '10.7.0.4', 41001, 42001, fill(24, 0x11)); // the first packet is not Skype's...
    u('10.7.0.3', '10.7.0.4', 41001, 42001, skype); // ...so the second one does not count
    u('10.7.0.5', '10.7.0.6', 41002, 42002, cat(hex('01 00 7777'), fill(40, 0x22))); // uTP-like bits, one direction only
    u('10.7.0.7', '10.7.0.8', 41003, 42003, skype); // Skype
    w.close();
    const { recs } = runLua('return { require "plugin.app_id" }', file);
    const apps = recs.filter((r) => r.type === 'app').map((r) => `${r.client_ip} ${r.app}`).sort();
    assert.deepEqual(apps, ['10.7.0.1 MDNS', '10.7.0.7 Skype_Teams']);
  });
});

describe('plugin.app_id: the server riff guessed may be the client', () => {
  test('a DNS answer from port 53 to port 500 is DNS (not IPSec by port); SYN-only flows to 22 and 443 are SSH and TLS by port at their close (when=empty), one with a payload is not', () => {
    const file = path.join(tmpdir(), 'either.pcap');
    const w = new PcapFileWriter(file);
    const put = framesInTurn(w);
    const answer = dns({ id: 7, response: true, questions: [{ name: 'example.com', type: 'A' }], answers: [{ name: 'example.com', type: 'A', data: '192.0.2.9' }] });
    put(ethernet({ src: SERVER_MAC, dst: CLIENT_MAC, type: ETHERTYPE.IPV4 }, ipv4({ src: '10.8.0.53', dst: '10.8.0.1', proto: IPPROTO.UDP }, udp({ src: '10.8.0.53', dst: '10.8.0.1', sport: 53, dport: 500 }, answer))));
    const syn = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.8.1.1', port: 40022, isn: 1 }, server: { mac: SERVER_MAC, ip: '10.8.1.2', port: 22, isn: 2 } });
    for (const p of [...syn.handshake(), ...syn.close()]) put(p.frame);
    // port 443 without payload: TLS's guess; with a payload that is not TLS: nothing
    const tls = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.8.1.1', port: 40443, isn: 5 }, server: { mac: SERVER_MAC, ip: '10.8.1.2', port: 443, isn: 6 } });
    for (const p of [...tls.handshake(), ...tls.close()]) put(p.frame);
    const junk = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.8.1.1', port: 40444, isn: 7 }, server: { mac: SERVER_MAC, ip: '10.8.1.2', port: 443, isn: 8 } });
    for (const p of [...junk.handshake(), ...junk.send('client', fill(40, 0x7a)), ...junk.close()]) put(p.frame);
    // no port rule for 40999/41000: stays unnamed
    const none = new TcpFlow({ client: { mac: CLIENT_MAC, ip: '10.8.1.1', port: 40999, isn: 3 }, server: { mac: SERVER_MAC, ip: '10.8.1.2', port: 41000, isn: 4 } });
    for (const p of [...none.handshake(), ...none.close()]) put(p.frame);
    w.close();
    const { recs } = runLua('return { require "plugin.app_id" }', file);
    const apps = recs.filter((r) => r.type === 'app').map((r) => `${r.app} ${r.by} ${r.direction} ${r.packet}`);
    assert.deepEqual(apps.map((a) => a.split(' ').slice(0, 2).join(' ')).sort(), ['DNS bytes', 'SSH port', 'TLS port']);
    assert.ok(apps.includes('SSH port none 0') && apps.includes('TLS port none 0'), apps.join('; '));
    const off = runLua('local a = require "plugin.app_id" a.name_empty = false return { a }', file);
    assert.deepEqual(off.recs.filter((r) => r.type === 'app').map((r) => r.app), ['DNS']);
  });
});

describe('plugin.app_id decides in nDPI\'s order: the port guess (lower port first), its signatures first, DNS as nDPI takes it', () => {
  test('port 20, two well-known ports, a reply from 53: named as nDPI 4.2 names them', () => {
    const file = path.join(tmpdir(), 'order.pcap');
    const w = new PcapFileWriter(file);
    const put = framesInTurn(w);
    let n = 0;
    const flows: Array<[string, string]> = []; // client ip, expected "app by" ('' = unnamed)
    const u = (sport: number, dport: number, b: Buffer, want: string) => {
      const a = `10.7.0.${++n}`, z = `10.7.1.${n}`;
      put(ethernet({ src: CLIENT_MAC, dst: SERVER_MAC, type: ETHERTYPE.IPV4 }, ipv4({ src: a, dst: z, proto: IPPROTO.UDP }, udp({ src: a, dst: z, sport, dport }, b))));
      flows.push([a, want]);
    };
    const t = (cport: number, sport: number, msgs: Array<[Dir, Buffer]>, want: string, syn = true) => {
      const a = `10.7.0.${++n}`, z = `10.7.1.${n}`;
      const f = new TcpFlow({ client: { mac: CLIENT_MAC, ip: a, port: cport, isn: 100 * n }, server: { mac: SERVER_MAC, ip: z, port: sport, isn: 100 * n + 50 } });
      const pk = [...(syn ? f.handshake() : []), ...msgs.flatMap(([d, b]) => f.send(d === 'c2s' ? 'client' : 'server', b)), ...f.close()];
      for (const p of pk) put(p.frame);
      flows.push([a, want]);
    };
    const bgpOpen = cat(fill(16, 0xff), u16(29), hex('04 04 fde8 00b4 c0000201 00'));
    // DNS headers (RFC 1035 4.1.1): id, flags, QD, AN, NS, AR, then a question
    const q = cat(hex('076578616d706c6503636f6d00'), hex('00010001'));
    const hdr = (flags: number, qd: number, an = 0, ns = 0, ar = 0) => cat(u16(0x4242), u16(flags), u16(qd), u16(an), u16(ns), u16(ar));
    // FTP data from port 20 with its SYN seen: FTP_DATA whatever it carries (BGP's OPEN, a TLS record);
    // picked up midstream, the bytes decide (BGP)
    t(20, 179, [['c2s', bgpOpen]], 'FTP_DATA bytes');
    t(20, 41060, [['c2s', tlsAppData()]], 'FTP_DATA bytes');
    t(20, 179, [['c2s', bgpOpen]], 'BGP bytes', false);
    // two well-known ports, junk payload: the lower port's rule, whichever side it is on
    t(23, 3389, [['c2s', fill(40, 0x7a)]], 'Telnet port');
    u(161, 137, fill(40, 0x7a), 'NetBIOS port');
    // the lower port has only a when=empty guess (SSH on 22): it is the guess, and names no flow with payload
    t(22, 3306, [['c2s', fill(40, 0x7a)]], '');
    // a registered client port and a server port no rule lists: the client's (nDPI 4.2 guesses so too)
    t(3306, 40800, [['c2s', fill(40, 0x7a)]], 'MySQL port');
    // from port 53 to port 500: a DNS answer is DNS by its bytes; a fuzzed one (opcode 9, 64259
    // questions) is refused by the DNS check and named DNS by the port guess, not IPSec
    u(53, 500, cat(hdr(0x8180, 1, 1), q, hex('c00c 0001 0001 0000012c 0004 c0000209')), 'DNS bytes');
    u(53, 500, cat(hdr(0xc980, 64259, 0x0301, 0xfb03, 0x01fb), fill(60, 0xfb)), 'DNS port');
    // what nDPI takes for DNS: a response without a question (a zone transfer's later message),
    // two questions, a query with AD set; what it refuses: a query with 17 questions, a NOTIFY
    // query carrying an answer
    u(53, 40500, cat(hdr(0x8400, 0, 1), hex('00 0006 0001 0000012c 0000')), 'DNS bytes');
    u(40501, 53, cat(hdr(0x0100, 2), q, q), 'DNS bytes');
    u(40502, 53, cat(hdr(0x0120, 1, 0, 0, 1), q, hex('00 0029 1000 00000000 0000')), 'DNS bytes');
    u(40503, 53, cat(hdr(0x0100, 17), q), 'DNS port');
    u(40504, 53, cat(hdr(0x2400, 1, 1), q, hex('c00c 0006 0001 0000012c 0000')), 'DNS port');
    // NTP from port 123 to port 80: NTP by its bytes (the lower port, HTTP's, is guessed first, refuses it)
    u(123, 80, ntp(), 'NTP bytes');
    w.close();
    const { recs } = runLua('return { require "plugin.app_id" }', file);
    const got = new Map<string, string>();
    for (const r of recs) if (r.type === 'app') got.set(r.client_ip === undefined ? '' : r.client_ip, `${r.app} ${r.by}`), got.set(r.server_ip, `${r.app} ${r.by}`);
    const bad = flows.filter(([ip, want]) => (got.get(ip) ?? '') !== want).map(([ip, want]) => `${ip}: want '${want}', got '${got.get(ip) ?? ''}'`);
    assert.deepEqual(bad, []);
  });
});
