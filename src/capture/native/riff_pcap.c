/*
 * riff_pcap: libpcap's filter compiler and matcher, for riff's packet batches.
 *
 * Filtering runs here rather than in JS so that a batch costs one N-API call
 * whatever its packet count, and so that the matcher is libpcap's own: a filter
 * selects exactly the packets `tcpdump -r FILE EXPR` would.
 *
 * Batch record layout (see src/capture/batch.ts), little-endian:
 *   0 sec lo, 4 sec hi, 8 nsec, 12 caplen, 16 wirelen, 20 linktype,
 *   24 iface, 28 flags, 32 packet id, 36 reserved; then caplen bytes, padded to 8.
 */
#define _GNU_SOURCE /* pwritev2, RWF_NOWAIT */
#include <node_api.h>
#include <uv.h>
#ifdef __GLIBC__
#include <malloc.h>
#include <limits.h>
#endif
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <poll.h>
#include <signal.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <netinet/in.h>

#define HDR 40
#define FLAG_ARRIVAL_TS 1u
#define FLAG_FILTERED_OUT 2u
#define FLAG_ELSEWHERE 4u
#define FLAG_OVERHEARD 8u
#define DEFAULT_SNAPLEN 262144
#define MAX_EXPR 65536

/* Bail out of a N-API callback, leaving any pending exception in place. */
#define CHECK(call)                                                         \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      bool pending_ = false;                                                \
      napi_is_exception_pending(env, &pending_);                            \
      if (!pending_) napi_throw_error(env, NULL, "riff_pcap: N-API call failed: " #call); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

static inline uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

/*
 * Capture files store LINKTYPE_* values; pcap_open_dead wants the platform's
 * DLT_* value. compile() normally lets libpcap map it (see open_as_savefile);
 * this is the fallback, and what dlt() reports. It mirrors libpcap's
 * linktype_to_dlt (pcap-common.c), which is not exported: the upper bits
 * carry the FCS length and are not part of the type, the values that some
 * platforms number differently are remapped, and everything else is
 * identical. (Checked against libpcap's own mapping for 0..299.)
 */
static int linktype_to_dlt(uint32_t linktype) {
  uint32_t lt = linktype & 0xFFFFu;
  switch (lt) {
    case 50: return DLT_PPP_SERIAL;    /* LINKTYPE_PPP_HDLC */
    case 51: return DLT_PPP_ETHER;     /* LINKTYPE_PPP_ETHER */
    case 100: return DLT_ATM_RFC1483;  /* LINKTYPE_ATM_RFC1483 */
    case 101: return DLT_RAW;          /* LINKTYPE_RAW */
    case 102: return DLT_SLIP_BSDOS;   /* LINKTYPE_SLIP_BSDOS */
    case 103: return DLT_PPP_BSDOS;    /* LINKTYPE_PPP_BSDOS */
    case 106: return DLT_ATM_CLIP;     /* LINKTYPE_ATM_CLIP, the one hole in the matching range */
    case 246: return DLT_PFSYNC;       /* LINKTYPE_PFSYNC */
    default: return (int)lt;
  }
}

/* A Buffer, any other TypedArray or DataView: its bytes, honouring byteOffset. */
static napi_status bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  napi_status st = napi_is_typedarray(env, v, &is);
  if (st != napi_ok) return st;
  if (is) {
    napi_typedarray_type type;
    size_t n;
    void *p;
    st = napi_get_typedarray_info(env, v, &type, &n, &p, NULL, NULL);
    if (st != napi_ok) return st;
    size_t el = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: el = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: el = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: el = 8; break;
      default: el = 1;
    }
    *data = p;
    *len = n * el;
    return napi_ok;
  }
  st = napi_is_dataview(env, v, &is);
  if (st != napi_ok) return st;
  if (is) {
    void *p;
    st = napi_get_dataview_info(env, v, len, &p, NULL, NULL);
    *data = p;
    return st;
  }
  return napi_invalid_arg;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

static void put_order(uint8_t *p, uint32_t v, int n, bool big) {
  for (int i = 0; i < n; i++) p[big ? n - 1 - i : i] = (uint8_t)(v >> (8 * i));
}

/*
 * A handle that libpcap believes reads a savefile with this link type, in this
 * host's byte order or (swapped) the other one. pcap_compile generates code
 * for savefiles that differs from what it generates for a pcap_open_dead
 * handle, which it takes for a live capture: on DLT_NULL/DLT_LOOP/DLT_ENC,
 * "ip6" matches all three BSD AF_INET6 values rather than this platform's, and
 * the AF_ word of DLT_NULL/DLT_ENC is compared in the byte order of the host
 * that wrote the file. Filters here run over captured records in userspace,
 * exactly as tcpdump -r does, so they are compiled the way tcpdump -r compiles
 * them. libpcap maps the LINKTYPE_ value to a DLT_ itself on this path.
 * The FILE reads from `hdr`, so the caller keeps it alive until pcap_close.
 */
static pcap_t *open_as_savefile(uint32_t linktype, int snaplen, bool swapped, uint8_t hdr[24],
                                char *errbuf) {
  const uint16_t one = 1;
  bool host_big = *(const uint8_t *)&one == 0;
  bool big = swapped ? !host_big : host_big;
  put_order(hdr, 0xa1b2c3d4u, 4, big);
  put_order(hdr + 4, 2, 2, big);
  put_order(hdr + 6, 4, 2, big);
  put_order(hdr + 8, 0, 4, big);
  put_order(hdr + 12, 0, 4, big);
  put_order(hdr + 16, (uint32_t)snaplen, 4, big);
  put_order(hdr + 20, linktype, 4, big);
  FILE *f = fmemopen(hdr, 24, "rb");
  if (!f) {
    snprintf(errbuf, PCAP_ERRBUF_SIZE, "fmemopen failed");
    return NULL;
  }
  /* On success the handle owns f; the header is read before this returns. */
  pcap_t *p = pcap_fopen_offline(f, errbuf);
  if (!p) fclose(f);
  return p;
}

/* compile(expr, linktype, snaplen, optimize, swapped = false) -> Buffer of struct bpf_insn */
static napi_value js_compile(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_type(env, "compile(expr, linktype, snaplen?, optimize?, swapped?)");

  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok)
    return throw_type(env, "compile: expr must be a string");
  if (len > MAX_EXPR) return throw_range(env, "compile: filter expression too long");
  char *expr = malloc(len + 1);
  if (!expr) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], expr, len + 1, &len);
  /* libpcap would silently stop at an embedded NUL and filter on a prefix. */
  if (strlen(expr) != len) {
    free(expr);
    return throw_type(env, "compile: expr contains a NUL character");
  }

  uint32_t linktype;
  if (napi_get_value_uint32(env, argv[1], &linktype) != napi_ok) {
    free(expr);
    return throw_type(env, "compile: linktype must be a number");
  }
  int32_t snaplen = DEFAULT_SNAPLEN;
  if (argc > 2) {
    napi_valuetype t;
    napi_typeof(env, argv[2], &t);
    if (t == napi_number) napi_get_value_int32(env, argv[2], &snaplen);
  }
  /* A program compiled for snaplen 0 ends in "ret #0" and so rejects everything. */
  if (snaplen <= 0) snaplen = DEFAULT_SNAPLEN;
  bool optimize = true;
  if (argc > 3) {
    napi_valuetype t;
    napi_typeof(env, argv[3], &t);
    if (t == napi_boolean) napi_get_value_bool(env, argv[3], &optimize);
  }

  bool swapped = false;
  if (argc > 4) {
    napi_valuetype t;
    napi_typeof(env, argv[4], &t);
    if (t == napi_boolean) napi_get_value_bool(env, argv[4], &swapped);
  }

  char errbuf[PCAP_ERRBUF_SIZE];
  uint8_t fakefile[24];
  pcap_t *p = open_as_savefile(linktype, snaplen, swapped, fakefile, errbuf);
  /* Only if libpcap cannot open even that; the code then differs only in the cases above. */
  if (!p && !swapped) p = pcap_open_dead(linktype_to_dlt(linktype), snaplen);
  if (!p) {
    free(expr);
    napi_throw_error(env, NULL, errbuf);
    return NULL;
  }
  struct bpf_program prog;
  /* Netmask 0, as tcpdump -r uses: "ip broadcast" then means 0.0.0.0 or 255.255.255.255. */
  int rc = pcap_compile(p, &prog, expr, optimize ? 1 : 0, 0);
  free(expr);
  if (rc != 0) {
    napi_value msg, err;
    /* Copy before pcap_close frees the handle that owns the text. */
    napi_status st = napi_create_string_utf8(env, pcap_geterr(p), NAPI_AUTO_LENGTH, &msg);
    pcap_close(p);
    CHECK(st);
    CHECK(napi_create_error(env, NULL, msg, &err));
    napi_throw(env, err);
    return NULL;
  }
  pcap_close(p);

  napi_value out;
  void *copy;
  napi_status st = napi_create_buffer_copy(env, (size_t)prog.bf_len * sizeof(struct bpf_insn),
                                           prog.bf_insns, &copy, &out);
  pcap_freecode(&prog);
  CHECK(st);
  return out;
}

/* A record's size in a batch: header and captured bytes padded to 8. */
static inline uint64_t record_size(const uint8_t *rec) {
  return HDR + (((uint64_t)rd32(rec + 12) + 7) & ~(uint64_t)7);
}

/*
 * Whether `count` records lie within `bytes`. Callers check before touching
 * any record, so a bad batch is refused as it was; msg names the first record
 * that does not fit, prefixed with `what`.
 */
static bool records_fit(const uint8_t *buf, size_t bytes, uint64_t count, const char *what, char *msg, size_t msgsize) {
  size_t o = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (bytes - o < HDR) {
      snprintf(msg, msgsize, "%s: record %llu header at offset %zu runs past %zu bytes", what, (unsigned long long)i, o, bytes);
      return false;
    }
    uint64_t rec = record_size(buf + o);
    if (rec > bytes - o) {
      snprintf(msg, msgsize, "%s: record %llu at offset %zu (caplen %u) runs past %zu bytes", what, (unsigned long long)i, o,
               rd32(buf + o + 12), bytes);
      return false;
    }
    o += (size_t)rec;
  }
  return true;
}

/*
 * apply(program, batch, count, bytes, linktype = -1, others?) -> passed
 *
 * Runs the program over every record not already FLAG_FILTERED_OUT whose
 * linktype equals `linktype` (all records when it is -1), marks the ones it
 * rejects, and returns how many it accepted. A program only makes sense for
 * the link type it was compiled for, so records of other link types are left
 * untouched; their distinct linktypes are reported in `others` (a Uint32Array:
 * others[0] = how many were found, others[1..] = the values; a count above
 * others.length - 1 means there were more than fit) so the caller can run
 * their own programs over them.
 */
static napi_value js_apply(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) return throw_type(env, "apply(program, batch, count, bytes, linktype?, others?)");

  uint8_t *pbytes, *buf;
  size_t plen, blen;
  if (bytes_of(env, argv[0], &pbytes, &plen) != napi_ok)
    return throw_type(env, "apply: program must be a Buffer from compile()");
  if (bytes_of(env, argv[1], &buf, &blen) != napi_ok)
    return throw_type(env, "apply: batch must be a Buffer");

  double dcount, dbytes;
  if (napi_get_value_double(env, argv[2], &dcount) != napi_ok ||
      napi_get_value_double(env, argv[3], &dbytes) != napi_ok)
    return throw_type(env, "apply: count and bytes must be numbers");
  if (!(dcount >= 0) || !(dbytes >= 0) || dcount != (double)(uint64_t)dcount ||
      dbytes != (double)(uint64_t)dbytes)
    return throw_range(env, "apply: count and bytes must be non-negative integers");
  if (dbytes > (double)blen) return throw_range(env, "apply: bytes exceeds the batch buffer");
  uint64_t count = (uint64_t)dcount;
  size_t bytes = (size_t)dbytes;

  int64_t want = -1;
  if (argc > 4) {
    napi_valuetype t;
    napi_typeof(env, argv[4], &t);
    if (t == napi_number) {
      double d;
      napi_get_value_double(env, argv[4], &d);
      if (d >= 0 && d <= 4294967295.0) want = (int64_t)d;
    }
  }

  uint32_t *others = NULL;
  size_t others_cap = 0;
  if (argc > 5) {
    bool is = false;
    napi_is_typedarray(env, argv[5], &is);
    if (is) {
      napi_typedarray_type type;
      size_t n;
      void *p;
      CHECK(napi_get_typedarray_info(env, argv[5], &type, &n, &p, NULL, NULL));
      if (type != napi_uint32_array || n < 1)
        return throw_type(env, "apply: others must be a non-empty Uint32Array");
      others = p;
      others_cap = n - 1;
      others[0] = 0;
    }
  }

  /* The program comes from JS, so it is untrusted: a bad jump would read out of bounds. */
  size_t ninsn = plen / sizeof(struct bpf_insn);
  if (plen == 0 || plen % sizeof(struct bpf_insn) != 0 || ninsn > 0x7FFFFFFF)
    return throw_type(env, "apply: program is not a compiled BPF program");
  struct bpf_insn *insns = (struct bpf_insn *)pbytes;
  struct bpf_insn *aligned = NULL;
  if (((uintptr_t)pbytes & (_Alignof(struct bpf_insn) - 1)) != 0) {
    aligned = malloc(plen);
    if (!aligned) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    memcpy(aligned, pbytes, plen);
    insns = aligned;
  }
  if (!bpf_validate(insns, (int)ninsn)) {
    free(aligned);
    return throw_type(env, "apply: program is not a valid BPF program");
  }
  struct bpf_program prog = {(u_int)ninsn, insns};

  /* Check every record fits before touching any, so a bad batch is left as it was. */
  char msg[160];
  if (!records_fit(buf, bytes, count, "apply", msg, sizeof msg)) {
    free(aligned);
    return throw_range(env, msg);
  }

  uint32_t passed = 0;
  size_t nothers = 0;
  size_t o = 0;
  for (uint64_t i = 0; i < count; i++) {
    uint8_t *h = buf + o;
    uint32_t caplen = rd32(h + 12);
    o += (size_t)record_size(h);
    uint32_t flags = rd32(h + 28);
    if (flags & FLAG_FILTERED_OUT) continue;
    uint32_t lt = rd32(h + 20);
    if (want >= 0 && lt != (uint32_t)want) {
      if (others && nothers <= others_cap) {
        size_t k = 0;
        while (k < nothers && others[1 + k] != lt) k++;
        if (k == nothers) {
          /* One past capacity means "more than fit": the caller then finds them itself. */
          if (nothers < others_cap) others[1 + nothers] = lt;
          nothers++;
        }
      }
      continue;
    }
    struct pcap_pkthdr ph;
    ph.ts.tv_sec = 0;
    ph.ts.tv_usec = 0;
    ph.caplen = caplen;
    /*
     * Arrival-stamped records have no wire length. The pcap writer records
     * caplen for them, so "len" here agrees with tcpdump -r on that file.
     */
    ph.len = (flags & FLAG_ARRIVAL_TS) ? caplen : rd32(h + 16);
    if (pcap_offline_filter(&prog, &ph, h + HDR)) {
      passed++;
    } else {
      wr32(h + 28, flags | FLAG_FILTERED_OUT);
    }
  }
  if (others) others[0] = (uint32_t)nothers;
  free(aligned);

  napi_value out;
  CHECK(napi_create_uint32(env, passed, &out));
  return out;
}

/* dlt(linktype) -> the DLT_* value compile() hands libpcap; exposed for tests and diagnostics. */
static napi_value js_dlt(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t lt;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &lt) != napi_ok)
    return throw_type(env, "dlt(linktype)");
  napi_value out;
  CHECK(napi_create_int32(env, linktype_to_dlt(lt), &out));
  return out;
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  napi_value out;
  CHECK(napi_create_string_utf8(env, pcap_lib_version(), NAPI_AUTO_LENGTH, &out));
  return out;
}

/*
 * copy(dst, src, triples, n): memcpy(dst + t[3i+1], src + t[3i], t[3i+2]).
 * The capture thread writes packets into a SharedArrayBuffer ring, and V8
 * copies into shared memory with relaxed atomics at a third of memcpy's
 * speed; one call per batch moves every packet with memcpy.
 */
static napi_value js_copy(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) return throw_type(env, "copy(dst, src, triples, n)");
  uint8_t *dst, *src, *tb;
  size_t dlen, slen, tlen;
  if (bytes_of(env, argv[0], &dst, &dlen) != napi_ok || bytes_of(env, argv[1], &src, &slen) != napi_ok ||
      bytes_of(env, argv[2], &tb, &tlen) != napi_ok)
    return throw_type(env, "copy: dst, src and triples must be typed arrays");
  uint32_t n;
  if (napi_get_value_uint32(env, argv[3], &n) != napi_ok) return throw_type(env, "copy: n must be a number");
  if ((uint64_t)n * 12 > tlen || ((uintptr_t)tb & 3)) return throw_range(env, "copy: n exceeds the triples");
  const uint32_t *t = (const uint32_t *)tb;
  for (uint32_t i = 0; i < n; i++, t += 3) {
    uint64_t from = t[0], to = t[1], len = t[2];
    if (from + len > slen || to + len > dlen) return throw_range(env, "copy: a range is out of bounds");
    memcpy(dst + to, src + from, (size_t)len);
  }
  return NULL;
}

static inline uint32_t rd32_order(const uint8_t *p, bool le) {
  uint32_t v = rd32(p);
  return le ? v : __builtin_bswap32(v);
}

/*
 * pcapRecords(dst, src, params, io): classic pcap records from src[pos, end)
 * appended to a batch (src/capture/batch.ts layout) in dst from byte
 * dstBytes on, up to maxCount of them. The capture thread's per-packet work
 * on the common record is then one C loop instead of JS calls per packet.
 * It stops, leaving the rest to pcap.ts, at the first record that is not
 * whole in src, does not fit in dst, or needs pcap.ts's care: captured
 * length over the snapshot length or the link type's maximum, a fraction
 * of a second that is a second or more.
 * params (Uint32Array): le, record header bytes, snapshot length, maximum
 *   captured length, linktype, ticks per second, ns per tick.
 * io (Uint32Array): in: pos, end, dstBytes, maxCount; out: pos, dstBytes.
 * Returns the number of records appended.
 */
static napi_value js_pcap_records(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) return throw_type(env, "pcapRecords(dst, src, params, io)");
  uint8_t *dst, *src, *pb, *iob;
  size_t dlen, slen, plen, iolen;
  if (bytes_of(env, argv[0], &dst, &dlen) != napi_ok || bytes_of(env, argv[1], &src, &slen) != napi_ok ||
      bytes_of(env, argv[2], &pb, &plen) != napi_ok || bytes_of(env, argv[3], &iob, &iolen) != napi_ok)
    return throw_type(env, "pcapRecords: dst, src, params and io must be typed arrays");
  if (plen < 7 * 4 || iolen < 4 * 4 || ((uintptr_t)pb & 3) || ((uintptr_t)iob & 3))
    return throw_range(env, "pcapRecords: params needs 7 words and io 4");
  const uint32_t *prm = (const uint32_t *)pb;
  uint32_t *io = (uint32_t *)iob;
  bool le = prm[0] != 0;
  uint32_t hs = prm[1], snap = prm[2], maxcap = prm[3], lt = prm[4], tps = prm[5], nspt = prm[6];
  uint64_t pos = io[0], end = io[1], db = io[2];
  uint32_t max = io[3], n = 0;
  if (end > slen || pos > end || db > dlen || (db & 7) || hs < 16) return throw_range(env, "pcapRecords: io is out of bounds");
  while (n < max && end - pos >= hs) {
    const uint8_t *h = src + pos;
    uint32_t caplen = rd32_order(h + 8, le);
    if (caplen > snap || caplen > maxcap || end - pos < (uint64_t)hs + caplen) break;
    uint32_t frac = rd32_order(h + 4, le);
    if (frac >= tps) break;
    uint64_t size = 40 + (((uint64_t)caplen + 7) & ~(uint64_t)7);
    if (db + size > dlen) break;
    uint8_t *o = dst + db;
    wr32(o, rd32_order(h, le));
    wr32(o + 4, 0);
    wr32(o + 8, frac * nspt);
    wr32(o + 12, caplen);
    wr32(o + 16, rd32_order(h + 12, le));
    wr32(o + 20, lt);
    memset(o + 24, 0, 16);
    memcpy(o + 40, h + hs, caplen);
    db += size;
    pos += hs + caplen;
    n++;
  }
  io[0] = (uint32_t)pos;
  io[1] = (uint32_t)db;
  napi_value out;
  CHECK(napi_create_uint32(env, n, &out));
  return out;
}

/*
 * Sharding by flow for --workers N, the same function as src/capture/flow.ts
 * (which the addon-less path runs): both directions of a flow map to one
 * worker, and a flow is what the decoder keys it on: the innermost IP
 * header lua/proto/packet.lua's walk reaches and its TCP/UDP ports. So the
 * walk below steps through the same link layers, shims (VLAN, PPPoE, MPLS,
 * MACsec, NSH, bridged Ethernet, ERSPAN) and tunnels (IP in IP, GRE, VXLAN,
 * Geneve) by the same rules: a key read from an outer header would split a
 * flow whose directions differ outside it (a VXLAN endpoint's source port,
 * MPLS labels on one direction only). Packets with no IP header go to
 * worker 0. Offsets are 0-based; n is the number of bytes looked at.
 */
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

#define WALK_MAX_DEPTH 8
#define WALK_MAX_EXT 16

typedef struct {
  const uint8_t *ip; /* the innermost IP header */
  int v;             /* 4 or 6 */
  int tp;            /* 6 or 17 when the decoder reads TCP/UDP ports there, 132 for SCTP's, else 0 */
  const uint8_t *l4;
} flow_key;

/* VLAN tags from *o: false when one is cut short or there are more than 8. */
static bool walk_vlans(const uint8_t *d, long n, uint32_t *et, long *o) {
  int k = 0;
  while (*et == 0x8100 || *et == 0x88a8 || *et == 0x9100 || *et == 0x9200) {
    if (*o + 4 > n || k >= 8) return false;
    *et = be16(d + *o + 2);
    *o += 4;
    k++;
  }
  return true;
}

/* An Ethernet header at o (inside a tunnel or shim). */
static bool walk_inner_eth(const uint8_t *d, long n, long o, uint32_t *et, long *o2) {
  if (o + 14 > n) return false;
  *et = be16(d + o + 12);
  *o2 = o + 14;
  return walk_vlans(d, n, et, o2) && *et > 1500;
}

/* PPP's protocol field at q (after an optional ff 03). */
static bool walk_ppp(const uint8_t *d, long n, long q, uint32_t *et, long *o2) {
  if (q + 2 <= n && d[q] == 0xff && d[q + 1] == 3) q += 2;
  if (q >= n) return false;
  uint32_t pp = d[q];
  if (pp & 1) q += 1;
  else {
    if (q + 2 > n) return false;
    pp = be16(d + q);
    q += 2;
  }
  *o2 = q;
  if (pp == 0x21) *et = 0x0800;
  else if (pp == 0x57) *et = 0x86dd;
  else if (pp == 0x281 || pp == 0x283) *et = 0x8847;
  else return false;
  return true;
}

static bool known_et(uint32_t et) {
  return et == 0x0800 || et == 0x86dd || et == 0x0806 || et == 0x8100 || et == 0x88a8 || et == 0x8847 || et == 0x8864;
}

/* One shim by EtherType: 1 and what it carries, 0 when it carries nothing decodable, -1 when et is no shim. */
static int walk_shim(const uint8_t *d, long n, uint32_t et, long o, uint32_t *e2, long *o2) {
  if (et == 0x8864) return o + 6 <= n && walk_ppp(d, n, o + 6, e2, o2);
  if (et == 0x8847 || et == 0x8848) {
    long q = o;
    for (int i = 0; i < 16; i++) {
      if (q + 4 > n) return 0;
      int bos = d[q + 2] & 1;
      q += 4;
      if (bos) {
        if (q >= n) return 0;
        int v = d[q] >> 4;
        *o2 = q;
        if (v == 4) return *e2 = 0x0800, 1;
        if (v == 6) return *e2 = 0x86dd, 1;
        if (v == 0 && q + 18 <= n && !known_et(be16(d + q + 12)) && known_et(be16(d + q + 16))) q += 4;
        return walk_inner_eth(d, n, q, e2, o2);
      }
    }
    return 0;
  }
  if (et == 0x88e5) {
    if (o + 6 > n) return 0;
    int tci = d[o];
    if (tci & 0x0c) return 0;
    long q = o + 6 + (tci & 0x20 ? 8 : 0);
    if (q + 2 > n) return 0;
    *e2 = be16(d + q);
    *o2 = q + 2;
    return 1;
  }
  if (et == 0x894f) {
    if (o + 8 > n) return 0;
    long hl = (d[o + 1] & 0x3f) * 4;
    int np = d[o + 3];
    if (hl < 8) return 0;
    long q = o + hl;
    *o2 = q;
    if (np == 1) return *e2 = 0x0800, 1;
    if (np == 2) return *e2 = 0x86dd, 1;
    if (np == 5) return *e2 = 0x8847, 1;
    if (np == 4) return *e2 = 0x894f, 1;
    if (np == 3) return walk_inner_eth(d, n, q, e2, o2);
    return 0;
  }
  if (et == 0x6558) return walk_inner_eth(d, n, o, e2, o2);
  if (et == 0x880b) return walk_ppp(d, n, o, e2, o2);
  if (et == 0x88be || et == 0x22eb) {
    long hl = 8;
    if (et == 0x22eb) {
      if (o + 12 > n) return 0;
      hl = 12 + (d[o + 11] & 1 ? 8 : 0);
    }
    return walk_inner_eth(d, n, o + hl, e2, o2);
  }
  return -1;
}

/* The Jumbo Payload option (RFC 2675) in a hop-by-hop header at pos, or -1. */
static long walk_jumbo(const uint8_t *d, long n, long pos) {
  if (pos + 2 > n) return -1;
  long e = pos + (d[pos + 1] + 1) * 8;
  if (e > n) e = n;
  for (long p = pos + 2; p < e;) {
    if (d[p] == 0) {
      p++;
      continue;
    }
    if (p + 2 > e) return -1;
    int l = d[p + 1];
    if (d[p] == 0xc2 && l == 4 && p + 6 <= e) return be32(d + p + 2);
    p += 2 + l;
  }
  return -1;
}

static bool walk_net(const uint8_t *d, long n, uint32_t et, long o, int depth, flow_key *k);

/* Into a tunnel: true when an IP header is found inside (else the outer packet is the flow). */
static bool walk_inner(const uint8_t *d, long n, uint32_t et, long o, int depth, flow_key *k) {
  flow_key in;
  if (!walk_net(d, n, et, o, depth + 1, &in)) return false;
  *k = in;
  return true;
}

static bool walk_net(const uint8_t *d, long n, uint32_t et, long o, int depth, flow_key *k) {
  while (et != 0x0800 && et != 0x86dd) {
    uint32_t e2;
    long o2;
    if (walk_shim(d, n, et, o, &e2, &o2) != 1 || depth >= WALK_MAX_DEPTH) return false;
    et = e2, o = o2, depth++;
  }
  long cend, o4;
  int proto;
  k->ip = d + o;
  k->tp = 0;
  if (et == 0x0800) {
    if (o + 20 > n || d[o] >> 4 != 4) return false;
    k->v = 4;
    long hl = (d[o] & 15) * 4, tlen = be16(d + o + 2);
    proto = d[o + 9];
    if (hl < 20) return true;
    if (tlen == 0) cend = n; /* TSO: the capture is the length */
    else if (tlen < hl) return true;
    else cend = o + tlen;
    o4 = o + hl;
    if (o4 > n || o4 > cend) return true;
    if (be16(d + o + 6) & 0x1fff) return true; /* a later fragment: no ports */
  } else {
    if (o + 40 > n || d[o] >> 4 != 6) return false;
    k->v = 6;
    long plen = be16(d + o + 4);
    int nh = d[o + 6];
    if (plen == 0 && nh != 59) {
      long j = nh == 0 ? walk_jumbo(d, n, o + 40) : -1;
      cend = j >= 0 ? o + 40 + j : n;
    } else {
      cend = o + 40 + plen;
    }
    /* Extension headers, as the decoder's v6chain: any damage or a later fragment leaves no ports. */
    long pos = o + 40;
    for (int x = 0;;) {
      if (!(nh == 0 || nh == 43 || nh == 60 || nh == 139 || nh == 140 || nh == 253 || nh == 254 || nh == 51 || nh == 44)) break;
      if (++x > WALK_MAX_EXT || (nh == 0 && x > 1) || pos + 2 > cend || pos + 2 > n) return true;
      long hl = nh == 44 ? 8 : nh == 51 ? (d[pos + 1] + 2) * 4 : (d[pos + 1] + 1) * 8;
      bool later = nh == 44 && pos + 8 <= n && pos + 8 <= cend && (be16(d + pos + 2) & 0xfff8);
      if (pos + hl > cend || pos + hl > n) return true;
      nh = d[pos];
      pos += hl;
      if (later) return true;
    }
    proto = nh;
    o4 = pos;
  }
  long stop = cend < n ? cend : n;
  if (depth < WALK_MAX_DEPTH && (proto == 4 || proto == 41 || proto == 47)) {
    uint32_t e2 = 0;
    long q = o4;
    bool in = true;
    if (proto == 4) e2 = 0x0800;
    else if (proto == 41) e2 = 0x86dd;
    else if (o4 + 4 > stop) in = false;
    else {
      uint32_t fl = be16(d + o4);
      e2 = be16(d + o4 + 2);
      q = o4 + 4;
      if ((fl & 7) == 0) {
        if (fl & 0x4000) in = false; /* routing present (RFC 1701): not followed */
        if (fl & 0x8000) q += 4;
        if (fl & 0x2000) q += 4;
        if (fl & 0x1000) q += 4;
        if (e2 == 0x88be && !(fl & 0x1000)) e2 = 0x6558; /* ERSPAN type I: no ERSPAN header */
      } else if ((fl & 7) == 1) {
        q += 4;
        if (fl & 0x1000) q += 4;
        if (fl & 0x0080) q += 4;
      } else {
        in = false;
      }
      if (q > stop) in = false;
    }
    if (in && walk_inner(d, stop, e2, q, depth, k)) return true;
  }
  if (proto == 6) {
    if (o4 + 20 <= cend && o4 + 20 <= n) k->tp = 6;
  } else if (proto == 17) {
    if (o4 + 8 > cend || o4 + 8 > n) return true;
    k->tp = 17;
    long ulen = be16(d + o4 + 4), ue = o4 + ulen;
    uint32_t dp = be16(d + o4 + 2);
    if (ulen >= 8 && ue <= cend && ue <= n && depth < WALK_MAX_DEPTH && (dp == 4789 || dp == 6081) && o4 + 16 <= ue) {
      long b = o4 + 8, q;
      uint32_t e2;
      bool in;
      if (dp == 4789) in = d[b] & 0x08, e2 = 0x6558, q = b + 8;
      else in = d[b] >> 6 == 0, e2 = be16(d + b + 2), q = b + 8 + (d[b] & 0x3f) * 4;
      flow_key outer = *k;
      if (in && walk_inner(d, ue, e2, q, depth, k)) return true;
      *k = outer;
    }
  } else if (proto == 132 && o4 + 4 <= stop) {
    k->tp = 132;
  }
  k->l4 = d + o4;
  return true;
}

/* The link layer of link type lt: the EtherType (or one made up) and where the network header starts. */
static bool walk_link(const uint8_t *d, long n, uint32_t lt, uint32_t *et, long *o) {
  switch (lt) {
  case 1:
    if (n < 14) return false;
    *et = be16(d + 12), *o = 14;
    if (!walk_vlans(d, n, et, o)) return false;
    if (*et <= 1500) { /* 802.3 length: IP only behind LLC/SNAP with an EtherType OUI */
      long q = *o;
      if (!(q + 8 <= n && d[q] == 0xaa && d[q + 1] == 0xaa && d[q + 2] == 3 && d[q + 3] == 0 && d[q + 4] == 0 && (d[q + 5] == 0 || d[q + 5] == 0xf8))) return false;
      *et = be16(d + q + 6), *o = q + 8;
    }
    return true;
  case 113:
    if (n < 16 || be16(d + 2) == 824) return false; /* 824: netlink */
    *et = be16(d + 14), *o = 16;
    return walk_vlans(d, n, et, o);
  case 276:
    if (n < 20 || be16(d + 8) == 824) return false;
    *et = be16(d), *o = 20;
    return walk_vlans(d, n, et, o);
  case 0:
  case 108: {
    if (n < 4) return false;
    uint32_t fam = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    if (fam > 0xffff) fam = be32(d);
    *o = 4;
    if (fam == 2) *et = 0x0800;
    else if (fam == 24 || fam == 28 || fam == 30 || fam == 10) *et = 0x86dd;
    else if (fam > 1500 && fam <= 0xffff) *et = fam; /* some old captures put an EtherType there */
    else return false;
    return true;
  }
  case 101:
  case 12:
  case 14:
    if (n < 1) return false;
    *o = 0;
    if (d[0] >> 4 == 4) *et = 0x0800;
    else if (d[0] >> 4 == 6) *et = 0x86dd;
    else return false;
    return true;
  case 228: return *et = 0x0800, *o = 0, true;
  case 229: return *et = 0x86dd, *o = 0, true;
  case 9:
  case 50:
  case 166:
  case 204: return walk_ppp(d, n, lt == 166 || lt == 204 ? 1 : 0, et, o);
  case 51: return *et = 0x8864, *o = 0, true;
  case 239: { /* NFLOG: TLVs in the capturing host's byte order; type 9 holds the packet */
    if (n < 4) return false;
    int fam = d[0];
    for (long q = 4; q + 4 <= n;) {
      long len = d[q] | d[q + 1] << 8, ty = d[q + 2] | d[q + 3] << 8;
      if (len < 4 || q + len > n + 3) len = be16(d + q), ty = be16(d + q + 2);
      if (len < 4) return false;
      if ((ty & 0x7fff) == 9) {
        *o = q + 4;
        if (fam == 2) *et = 0x0800;
        else if (fam == 10) *et = 0x86dd;
        else if (*o < n && d[*o] >> 4 == 4) *et = 0x0800;
        else if (*o < n && d[*o] >> 4 == 6) *et = 0x86dd;
        else return false;
        return true;
      }
      q += (len + 3) & ~3L;
    }
    return false;
  }
  case 107: { /* Frame Relay: Q.922 address, then RFC 2427 (03, NLPID) or Cisco's EtherType */
    if (n < 4) return false;
    long q = (d[1] & 1) ? 2 : 3;
    if (d[q] == 3) {
      q++;
      if (q < n && d[q] == 0) q++;
      if (q >= n) return false;
      int nl = d[q];
      if (nl == 0xcc) *et = 0x0800, *o = q + 1;
      else if (nl == 0x8e) *et = 0x86dd, *o = q + 1;
      else if (nl == 0x80 && q + 6 <= n) *et = be16(d + q + 4), *o = q + 6;
      else return false;
      return true;
    }
    if (q + 2 > n) return false;
    return *et = be16(d + q), *o = q + 2, true;
  }
  case 104:
    if (n < 4) return false;
    return *et = be16(d + 2), *o = 4, true;
  case 242: /* IP over InfiniBand */
    if (n < 44) return false;
    return *et = be16(d + 40), *o = 44, true;
  case 226: /* Solaris ipnet */
    if (n < 24) return false;
    *o = 24;
    if (d[1] == 2) *et = 0x0800;
    else if (d[1] == 26) *et = 0x86dd;
    else return false;
    return true;
  }
  return false;
}

static uint32_t endpoint(const uint8_t *addr, int len, uint32_t port) {
  uint32_t h = 0x811c9dc5u;
  for (int i = 0; i < len; i++) h = (h ^ addr[i]) * 0x01000193u;
  return (h ^ port) * 0x01000193u;
}

/* A worker from a flow's hash. FNV's xor-and-multiply carries only upwards:
 * its low k bits depend on the low k bits of each byte alone, so taken
 * modulo 2 or 4 it put every connection between two hosts on one worker
 * (Linux's connect() picks even ports). Murmur3's finalizer mixes the high
 * bits down first. */
static uint32_t worker_of(uint32_t h, uint32_t n) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h % n;
}

/* *ports: the TCP/UDP source and destination port (src << 16 | dst), or
 * NO_PORTS for anything else; read only when asked (overhearing is on). */
#define NO_PORTS 0xffffffffu
/* by_service: a TCP/UDP packet goes by its lower-port endpoint alone (the
 * service, as a client's port is ephemeral), so every connection to one
 * service lands on one worker (a script's riff.shard("service")). */
static uint32_t shard_of(const uint8_t *rec, uint32_t n, uint32_t *l4ports, bool by_service) {
  *l4ports = NO_PORTS;
  if (n <= 1) return 0;
  uint32_t lt = rd32(rec + 20);
  long len = rd32(rec + 12);
  if (lt & 0x04000000u) len -= (long)(lt >> 28) * 2; /* the FCS at the end is not the packet's */
  if (len < 0) len = 0;
  const uint8_t *d = rec + HDR;
  uint32_t et;
  long o;
  flow_key k;
  if (!walk_link(d, len, lt & 0xffffu, &et, &o) || !walk_net(d, len, et, o, 0, &k)) return 0;
  int alen = k.v == 4 ? 4 : 16;
  const uint8_t *src = k.ip + (k.v == 4 ? 12 : 8), *dst = src + alen;
  bool ports = k.tp != 0;
  uint32_t sp = ports ? be16(k.l4) : 0, dp = ports ? be16(k.l4 + 2) : 0;
  uint32_t a = endpoint(src, alen, sp), b = endpoint(dst, alen, dp);
  if (k.tp == 6 || k.tp == 17) *l4ports = sp << 16 | dp;
  if (ports && by_service && sp != dp) return worker_of(sp < dp ? a : b, n);
  return worker_of(a + b, n);
}

/*
 * shardPlan(batch, count, n, shards, bytes, elsewhere, overhear): each
 * record's worker in shards[i] (255 for records the filter dropped) and each
 * worker's bytes in bytes[w]. With `elsewhere` the batch is worker 0's ring
 * slot: records for other workers are flagged FLAG_ELSEWHERE there, for
 * worker 0 to skip, and only they are copied out (shardCopy), not worker
 * 0's own. `overhear` (null, or a bitmap of 65536 ports): a TCP/UDP record
 * with either port in it goes to every worker (shards[i] = owner | 0x80);
 * the copies in the workers that do not own its flow carry FLAG_OVERHEARD
 * (the script's overhear phase sees them, nothing else does). Each worker's
 * copy sits in its own queue in capture order, so every worker has heard a
 * DNS answer before any later packet of its own flows. `byService`: shard
 * TCP/UDP by the lower-port endpoint (shard_of). When `bytes` has room for
 * n + 2 words: bytes[n] = 1 + the byte offset of the batch's last record
 * that passed the filter, bytes[n + 1] the same for its last TCP/UDP record
 * (0: none), so the pool can tell every worker where the run ended.
 */
#define BROADCAST 0x80u
static napi_value js_shard_plan(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return throw_type(env, "shardPlan(batch, count, n, shards, bytes, elsewhere, overhear, byService)");
  uint8_t *buf, *sh, *bb, *hear = NULL;
  size_t len, shlen, blen, hlen = 0;
  uint32_t count, n;
  bool elsewhere;
  if (bytes_of(env, argv[0], &buf, &len) != napi_ok || bytes_of(env, argv[3], &sh, &shlen) != napi_ok ||
      bytes_of(env, argv[4], &bb, &blen) != napi_ok || napi_get_value_uint32(env, argv[1], &count) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &n) != napi_ok || napi_get_value_bool(env, argv[5], &elsewhere) != napi_ok)
    return throw_type(env, "shardPlan(batch, count, n, shards, bytes, elsewhere, overhear, byService)");
  if (argc >= 7) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[6], &t));
    if (t != napi_null && t != napi_undefined) {
      if (bytes_of(env, argv[6], &hear, &hlen) != napi_ok || hlen < 8192)
        return throw_type(env, "shardPlan: overhear must be a bitmap of 65536 ports (8192 bytes) or null");
    }
  }
  bool by_service = false;
  if (argc >= 8 && napi_get_value_bool(env, argv[7], &by_service) != napi_ok)
    return throw_type(env, "shardPlan: byService must be a boolean");
  if (n < 1 || n > 127 || shlen < count || blen < (size_t)n * 4 || ((uintptr_t)bb & 3))
    return throw_range(env, "shardPlan: shards or bytes too small");
  char msg[160];
  if (!records_fit(buf, len, count, "shardPlan", msg, sizeof msg)) return throw_range(env, msg);
  uint32_t *bytes = (uint32_t *)bb;
  bool ends = blen >= ((size_t)n + 2) * 4;
  memset(bytes, 0, (size_t)(ends ? n + 2 : n) * 4);
  uint8_t *rec = buf;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t size = record_size(rec);
    uint32_t flags = rd32(rec + 28);
    if (flags & FLAG_FILTERED_OUT) {
      sh[i] = 255;
    } else {
      uint32_t ports;
      uint32_t w = shard_of(rec, n, &ports, by_service);
      if (ends) {
        bytes[n] = (uint32_t)(rec - buf) + 1;
        if (ports != NO_PORTS) bytes[n + 1] = (uint32_t)(rec - buf) + 1;
      }
      bool all = hear && ports != NO_PORTS &&
                 ((hear[ports >> 19] >> (ports >> 16 & 7) & 1) || (hear[(ports & 0xffff) >> 3] >> (ports & 7) & 1));
      if (all) {
        sh[i] = (uint8_t)(w | BROADCAST);
        for (uint32_t k = 0; k < n; k++) bytes[k] += (uint32_t)size;
        if (elsewhere && w != 0) wr32(rec + 28, flags | FLAG_OVERHEARD);
      } else {
        sh[i] = (uint8_t)w;
        bytes[w] += (uint32_t)size;
        if (elsewhere && w != 0) wr32(rec + 28, flags | FLAG_ELSEWHERE);
      }
    }
    rec += size;
  }
  return NULL;
}

/*
 * shardCopy(batch, count, shards, w, dst, at): worker w's records, in order,
 * copied to dst from byte `at` (FLAG_ELSEWHERE cleared), with the records
 * every worker overhears (FLAG_OVERHEARD where w does not own them); returns
 * how many.
 */
static napi_value js_shard_copy(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return throw_type(env, "shardCopy(batch, count, shards, w, dst, at)");
  uint8_t *buf, *sh, *dst;
  size_t len, shlen, dlen;
  uint32_t count, w, at;
  if (bytes_of(env, argv[0], &buf, &len) != napi_ok || bytes_of(env, argv[2], &sh, &shlen) != napi_ok ||
      bytes_of(env, argv[4], &dst, &dlen) != napi_ok || napi_get_value_uint32(env, argv[1], &count) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &w) != napi_ok || napi_get_value_uint32(env, argv[5], &at) != napi_ok)
    return throw_type(env, "shardCopy(batch, count, shards, w, dst, at)");
  if (shlen < count) return throw_range(env, "shardCopy: shards too small");
  char msg[160];
  if (!records_fit(buf, len, count, "shardCopy", msg, sizeof msg)) return throw_range(env, msg);
  uint64_t o = at;
  uint32_t copied = 0;
  const uint8_t *rec = buf;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t size = record_size(rec);
    uint32_t s = sh[i];
    if (s == w || (s != 255 && (s & BROADCAST))) {
      if (o + size > dlen) return throw_range(env, "shardCopy: dst too small");
      memcpy(dst + o, rec, (size_t)size);
      uint32_t f = rd32(rec + 28) & ~(FLAG_ELSEWHERE | FLAG_OVERHEARD);
      wr32(dst + o + 28, (s & ~BROADCAST) == w ? f : f | FLAG_OVERHEARD);
      o += size;
      copied++;
    }
    rec += size;
  }
  napi_value out;
  CHECK(napi_create_uint32(env, copied, &out));
  return out;
}

/*
 * Live capture. libpcap's handle is made non-blocking and its selectable fd
 * watched by libuv on the main thread's loop: when the kernel has packets,
 * JS gets one callback and calls liveRead, which moves every packet that is
 * ready (up to a batch) into riff's batch layout with libpcap's own header
 * (kernel timestamp, caplen, wire length) in one C loop. No thread of our
 * own, no JS call per packet, and the event loop never blocks: with nothing
 * ready, liveRead returns 0.
 */
typedef struct {
  pcap_t *p;
  uv_poll_t poll;
  /* libpcap's required select timeout (pcap_get_required_select_timeout):
   * after the link went down no event comes for the interface being
   * deleted; libpcap learns it only when read, so a timer reads meanwhile. */
  uv_timer_t wake;
  /* Handles still to close before the struct is freed. */
  int open_handles;
  bool polling;
  bool closed;
  /* liveWatch calls so far: tells live_on_poll whether JS chose a state itself. */
  unsigned watches;
  napi_env env;
  napi_ref onready;
  uint32_t linktype; /* LINKTYPE_* of what liveRead writes */
  uint32_t snaplen;
  bool nano;
} live_t;

/* The inverse of linktype_to_dlt: libpcap hands out DLT_* values, riff's batches carry LINKTYPE_*. */
static uint32_t dlt_to_linktype(int dlt) {
  if (dlt == DLT_RAW || dlt == 12 || dlt == 14) return 101; /* 12 on most platforms, 14 on OpenBSD */
  if (dlt == DLT_ATM_RFC1483) return 100;
  if (dlt == DLT_SLIP_BSDOS) return 102;
  if (dlt == DLT_PPP_BSDOS) return 103;
  if (dlt == DLT_ATM_CLIP) return 106;
  if (dlt == DLT_PFSYNC) return 246;
  if (dlt == DLT_PPP_SERIAL) return 50;
  if (dlt == DLT_PPP_ETHER) return 51;
  return (uint32_t)dlt;
}

static void live_free_handle(uv_handle_t *h) {
  live_t *l = h->data;
  if (--l->open_handles > 0) return;
  if (l->p) pcap_close(l->p);
  free(l);
}

static void live_close(live_t *l) {
  if (l->closed) return;
  l->closed = true;
  if (l->onready) {
    napi_delete_reference(l->env, l->onready);
    l->onready = NULL;
  }
  if (l->polling) uv_poll_stop(&l->poll);
  l->polling = false;
  uv_timer_stop(&l->wake);
  uv_close((uv_handle_t *)&l->wake, live_free_handle);
  /* The poll handle must be closed before the fd it watches goes away. */
  uv_close((uv_handle_t *)&l->poll, live_free_handle);
}

static void live_finalize(napi_env env, void *data, void *hint) {
  /* Closed by JS normally; a handle collected while open is closed here. */
  live_close(data);
}

static live_t *live_arg(napi_env env, napi_value v) {
  live_t *l = NULL;
  if (napi_get_value_external(env, v, (void **)&l) != napi_ok || !l) {
    napi_throw_type_error(env, NULL, "live: not a live capture handle");
    return NULL;
  }
  if (l->closed) {
    napi_throw_error(env, NULL, "live: the capture is closed");
    return NULL;
  }
  return l;
}

static bool get_prop(napi_env env, napi_value obj, const char *key, napi_value *out, napi_valuetype want) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return false;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  return t == want;
}

static int32_t opt_int(napi_env env, napi_value o, const char *key, int32_t dflt) {
  napi_value v;
  int32_t n = dflt;
  if (get_prop(env, o, key, &v, napi_number)) napi_get_value_int32(env, v, &n);
  return n;
}

static bool opt_bool(napi_env env, napi_value o, const char *key, bool dflt) {
  napi_value v;
  bool b = dflt;
  if (get_prop(env, o, key, &v, napi_boolean)) napi_get_value_bool(env, v, &b);
  return b;
}

/* A string option, malloc'd (caller frees), or NULL when absent. */
static char *opt_str(napi_env env, napi_value o, const char *key) {
  napi_value v;
  if (!get_prop(env, o, key, &v, napi_string)) return NULL;
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static void set_num(napi_env env, napi_value obj, const char *key, double val) {
  napi_value v;
  if (napi_create_double(env, val, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static void set_bool(napi_env env, napi_value obj, const char *key, bool val) {
  napi_value v;
  if (napi_get_boolean(env, val, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

/* An Error carrying `stage` (which step failed: open, activate, filter...) so JS can word it. */
static napi_value throw_live(napi_env env, const char *stage, const char *msg, int code) {
  napi_value m, e, s;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_string_utf8(env, stage, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, e, "stage", s);
  set_num(env, e, "pcapCode", code);
  napi_throw(env, e);
  return NULL;
}

/*
 * liveOpen({device, snaplen, promisc, bufferBytes, immediate, timeoutMs, nano,
 *           linktypeName?, direction?, filter?, listOnly?})
 *   -> {handle, linktype, dlt, nano, tstampTypes, warning?, datalinks?}
 * Every step is libpcap's, in tcpdump's order: create, set options,
 * activate, then data link (-y), direction (-Q) and filter. A failure throws
 * an Error whose .stage names the step.
 */
static napi_value js_live_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value o;
  CHECK(napi_get_cb_info(env, info, &argc, &o, NULL, NULL));
  if (argc < 1) return throw_type(env, "liveOpen(options)");
  char *device = opt_str(env, o, "device");
  if (!device) return throw_type(env, "liveOpen: device must be a string");
  char errbuf[PCAP_ERRBUF_SIZE] = "";
  pcap_t *p = pcap_create(device, errbuf);
  free(device);
  if (!p) return throw_live(env, "open", errbuf, PCAP_ERROR);

  int snaplen = opt_int(env, o, "snaplen", DEFAULT_SNAPLEN);
  bool want_nano = opt_bool(env, o, "nano", true);
  bool list_only = opt_bool(env, o, "listOnly", false);
  const char *warning = NULL;
  pcap_set_snaplen(p, snaplen);
  pcap_set_promisc(p, opt_bool(env, o, "promisc", true) ? 1 : 0);
  pcap_set_timeout(p, opt_int(env, o, "timeoutMs", 10));
  int bufbytes = opt_int(env, o, "bufferBytes", 0);
  if (bufbytes > 0) pcap_set_buffer_size(p, bufbytes);
  if (opt_bool(env, o, "immediate", false)) pcap_set_immediate_mode(p, 1);
  bool nano = false;
  if (want_nano) {
    nano = pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO) == 0;
    if (!nano) warning = "this platform's libpcap gives microsecond timestamps, not nanosecond";
  } else {
    pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_MICRO);
  }

  int rc = pcap_activate(p);
  if (rc < 0) {
    /* PCAP_ERROR's text is in the handle; the others have a fixed wording. */
    const char *msg = rc == PCAP_ERROR ? pcap_geterr(p) : pcap_statustostr(rc);
    char copy[PCAP_ERRBUF_SIZE + 64];
    if (rc == PCAP_ERROR_NO_SUCH_DEVICE || rc == PCAP_ERROR_PERM_DENIED)
      snprintf(copy, sizeof copy, "%s%s%s", pcap_statustostr(rc), *pcap_geterr(p) ? ": " : "", pcap_geterr(p));
    else
      snprintf(copy, sizeof copy, "%s", msg);
    pcap_close(p);
    return throw_live(env, "activate", copy, rc);
  }
  char actwarn[PCAP_ERRBUF_SIZE + 64] = "";
  if (rc > 0 && rc != PCAP_WARNING_TSTAMP_TYPE_NOTSUP) {
    snprintf(actwarn, sizeof actwarn, "%s%s%s", pcap_statustostr(rc), *pcap_geterr(p) ? ": " : "", pcap_geterr(p));
    warning = actwarn;
  }
  if (want_nano && pcap_get_tstamp_precision(p) != PCAP_TSTAMP_PRECISION_NANO) {
    nano = false;
    warning = "the device gives microsecond timestamps, not nanosecond";
  }

  napi_value out;
  CHECK(napi_create_object(env, &out));

  /* -L: the link types the device offers, by name and description, as tcpdump lists them. */
  int *dlts = NULL;
  int ndlts = pcap_list_datalinks(p, &dlts);
  if (ndlts >= 0) {
    napi_value arr;
    CHECK(napi_create_array_with_length(env, (size_t)ndlts, &arr));
    for (int i = 0; i < ndlts; i++) {
      napi_value e;
      CHECK(napi_create_object(env, &e));
      set_num(env, e, "dlt", dlts[i]);
      const char *name = pcap_datalink_val_to_name(dlts[i]);
      if (name) set_str(env, e, "name", name);
      const char *desc = pcap_datalink_val_to_description(dlts[i]);
      if (desc) set_str(env, e, "description", desc);
      napi_set_element(env, arr, (uint32_t)i, e);
    }
    napi_set_named_property(env, out, "datalinks", arr);
    pcap_free_datalinks(dlts);
  }
  if (list_only) {
    pcap_close(p);
    return out;
  }

  char *ltname = opt_str(env, o, "linktypeName");
  if (ltname) {
    int dlt = pcap_datalink_name_to_val(ltname);
    if (dlt < 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "invalid data link type %s", ltname);
      free(ltname);
      pcap_close(p);
      return throw_live(env, "linktype", msg, PCAP_ERROR);
    }
    free(ltname);
    if (pcap_set_datalink(p, dlt) < 0) {
      char msg[PCAP_ERRBUF_SIZE + 32];
      snprintf(msg, sizeof msg, "%s", pcap_geterr(p));
      pcap_close(p);
      return throw_live(env, "linktype", msg, PCAP_ERROR);
    }
  }

  int dir = opt_int(env, o, "direction", -1);
  if (dir >= 0) {
    pcap_direction_t d = dir == 1 ? PCAP_D_IN : dir == 2 ? PCAP_D_OUT : PCAP_D_INOUT;
    if (pcap_setdirection(p, d) < 0) {
      char msg[PCAP_ERRBUF_SIZE + 32];
      snprintf(msg, sizeof msg, "%s", pcap_geterr(p));
      pcap_close(p);
      return throw_live(env, "direction", msg, PCAP_ERROR);
    }
  }

  char *filter = opt_str(env, o, "filter");
  if (filter && *filter) {
    struct bpf_program prog;
    bpf_u_int32 net = 0, mask = 0;
    /* tcpdump compiles a live filter with the interface's netmask ("ip broadcast"). */
    char lerr[PCAP_ERRBUF_SIZE];
    napi_value dv;
    char *dev = get_prop(env, o, "device", &dv, napi_string) ? opt_str(env, o, "device") : NULL;
    if (!dev || pcap_lookupnet(dev, &net, &mask, lerr) < 0) mask = 0;
    free(dev);
    if (pcap_compile(p, &prog, filter, 1, mask) < 0 || pcap_setfilter(p, &prog) < 0) {
      char msg[PCAP_ERRBUF_SIZE + 32];
      snprintf(msg, sizeof msg, "%s", pcap_geterr(p));
      free(filter);
      pcap_close(p);
      return throw_live(env, "filter", msg, PCAP_ERROR);
    }
    pcap_freecode(&prog);
  }
  free(filter);

  if (pcap_setnonblock(p, 1, errbuf) < 0) {
    pcap_close(p);
    return throw_live(env, "nonblock", errbuf, PCAP_ERROR);
  }
  int fd = pcap_get_selectable_fd(p);
  if (fd < 0) {
    pcap_close(p);
    return throw_live(env, "open", "this device has no selectable descriptor; riff cannot wait on it", PCAP_ERROR);
  }

  live_t *l = calloc(1, sizeof *l);
  if (!l) {
    pcap_close(p);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  l->p = p;
  l->env = env;
  l->nano = nano;
  l->snaplen = (uint32_t)pcap_snapshot(p);
  int dlt = pcap_datalink(p);
  l->linktype = dlt_to_linktype(dlt);
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &l->poll, fd) != 0) {
    pcap_close(p);
    free(l);
    return throw_live(env, "open", "libuv cannot watch the capture descriptor", PCAP_ERROR);
  }
  l->poll.data = l;
  uv_timer_init(loop, &l->wake);
  l->wake.data = l;
  l->open_handles = 2;

  napi_value handle;
  CHECK(napi_create_external(env, l, live_finalize, NULL, &handle));
  napi_set_named_property(env, out, "handle", handle);
  set_num(env, out, "linktype", l->linktype);
  set_num(env, out, "dlt", dlt);
  set_num(env, out, "snaplen", l->snaplen);
  set_bool(env, out, "nano", nano);
  const char *dn = pcap_datalink_val_to_name(dlt);
  if (dn) set_str(env, out, "dltName", dn);
  if (warning) set_str(env, out, "warning", warning);
  return out;
}

/*
 * The kernel has packets, or the socket has an error. On POLLERR (a link
 * taken down: ENETDOWN) libuv stops the handle and calls back with
 * UV_EBADF; the read that follows lets libpcap fetch the socket's error, as
 * pcap_dispatch does under tcpdump. When libpcap carries on (the interface
 * is still there), so does the watch: it is started again, unless JS chose
 * the state itself meanwhile (paused for the ring, or closed after libpcap
 * reported a real error such as the interface deleted).
 */
/* onready() in JS, in a handle scope; an exception goes to Node as an event handler's would. */
static void live_call_onready(live_t *l) {
  napi_env env = l->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, global, result;
  if (napi_get_reference_value(env, l->onready, &fn) == napi_ok && fn && napi_get_global(env, &global) == napi_ok) {
    if (napi_call_function(env, global, fn, 0, NULL, &result) != napi_ok) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void live_on_poll(uv_poll_t *h, int status, int events) {
  live_t *l = h->data;
  (void)events;
  if (status < 0) l->polling = false; /* libuv has stopped the handle */
  if (l->closed || !l->onready) return;
  unsigned watches = l->watches;
  live_call_onready(l);
  if (status < 0 && !l->closed && l->onready && !l->polling && l->watches == watches &&
      uv_poll_start(&l->poll, UV_READABLE, live_on_poll) == 0)
    l->polling = true;
}

/* The required timeout ran out (see `wake`): read as if the descriptor were readable. */
static void live_on_wake(uv_timer_t *t) {
  live_t *l = t->data;
  if (l->closed || !l->onready || !l->polling) return;
  live_call_onready(l);
}

/* liveWatch(handle, onready | null): call onready() whenever the kernel has packets; null pauses. */
static napi_value js_live_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  live_t *l = argc > 0 ? live_arg(env, argv[0]) : NULL;
  if (!l) return NULL;
  napi_valuetype t = napi_undefined;
  if (argc > 1) napi_typeof(env, argv[1], &t);
  l->watches++;
  if (t == napi_function) {
    if (l->onready) napi_delete_reference(env, l->onready);
    CHECK(napi_create_reference(env, argv[1], 1, &l->onready));
    if (!l->polling && uv_poll_start(&l->poll, UV_READABLE, live_on_poll) == 0) l->polling = true;
  } else if (l->polling) {
    uv_poll_stop(&l->poll);
    l->polling = false;
  }
  return NULL;
}

/*
 * liveRead(handle, dst, io) -> packets appended.
 * io (Uint32Array): in: dstBytes (where to append), maxCount; out: dstBytes.
 * Appends ready packets until none is ready, maxCount were taken, or the
 * room left could not hold a packet of the snapshot length (so no packet is
 * ever taken that does not fit). A device that went away throws.
 */
static napi_value js_live_read(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  live_t *l = argc > 2 ? live_arg(env, argv[0]) : NULL;
  if (!l) return argc > 2 ? NULL : throw_type(env, "liveRead(handle, dst, io)");
  uint8_t *dst, *iob;
  size_t dlen, iolen;
  if (bytes_of(env, argv[1], &dst, &dlen) != napi_ok || bytes_of(env, argv[2], &iob, &iolen) != napi_ok)
    return throw_type(env, "liveRead: dst and io must be typed arrays");
  if (iolen < 8 || ((uintptr_t)iob & 3)) return throw_range(env, "liveRead: io needs 2 words");
  uint32_t *io = (uint32_t *)iob;
  uint64_t db = io[0];
  uint32_t max = io[1], n = 0;
  if (db > dlen || (db & 7)) return throw_range(env, "liveRead: dstBytes is out of bounds");
  uint64_t worst = HDR + (((uint64_t)l->snaplen + 7) & ~(uint64_t)7);
  while (n < max && dlen - db >= worst) {
    struct pcap_pkthdr *h;
    const u_char *data;
    int rc = pcap_next_ex(l->p, &h, &data);
    if (rc == 0 || rc == PCAP_ERROR_BREAK) break;
    if (rc < 0) {
      io[0] = (uint32_t)db;
      if (n > 0) break; /* hand over what came before; the next call throws */
      char msg[PCAP_ERRBUF_SIZE + 32];
      snprintf(msg, sizeof msg, "%s", pcap_geterr(l->p));
      return throw_live(env, "read", msg, rc);
    }
    uint32_t caplen = h->caplen;
    /* libpcap never hands more than the snapshot length; be sure before copying. */
    if (caplen > l->snaplen) caplen = l->snaplen;
    uint8_t *o = dst + db;
    uint64_t sec = (uint64_t)(int64_t)h->ts.tv_sec;
    wr32(o, (uint32_t)sec);
    wr32(o + 4, (uint32_t)(sec >> 32));
    wr32(o + 8, l->nano ? (uint32_t)h->ts.tv_usec : (uint32_t)h->ts.tv_usec * 1000u);
    wr32(o + 12, caplen);
    wr32(o + 16, h->len);
    wr32(o + 20, l->linktype);
    memset(o + 24, 0, 16);
    memcpy(o + HDR, data, caplen);
    db += HDR + (((uint64_t)caplen + 7) & ~(uint64_t)7);
    n++;
  }
  io[0] = (uint32_t)db;
  /* While libpcap needs to be read on a timer (the link went down: only a
   * read tells it the interface is gone), a timer reads; else none runs. */
  const struct timeval *tv = pcap_get_required_select_timeout(l->p);
  if (tv && !l->closed) {
    uint64_t ms = (uint64_t)tv->tv_sec * 1000u + (uint64_t)(tv->tv_usec + 999) / 1000u;
    uv_timer_start(&l->wake, live_on_wake, ms ? ms : 1, 0);
  } else {
    uv_timer_stop(&l->wake);
  }
  napi_value out;
  CHECK(napi_create_uint32(env, n, &out));
  return out;
}

/* liveStats(handle) -> [received by filter, dropped by kernel, dropped by interface] (libpcap's pcap_stats). */
static napi_value js_live_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  live_t *l = argc > 0 ? live_arg(env, argv[0]) : NULL;
  if (!l) return NULL;
  struct pcap_stat st;
  if (pcap_stats(l->p, &st) < 0) return throw_live(env, "stats", pcap_geterr(l->p), PCAP_ERROR);
  napi_value arr;
  CHECK(napi_create_array_with_length(env, 3, &arr));
  double v[3] = {st.ps_recv, st.ps_drop, st.ps_ifdrop};
  for (uint32_t i = 0; i < 3; i++) {
    napi_value e;
    CHECK(napi_create_double(env, v[i], &e));
    CHECK(napi_set_element(env, arr, i, e));
  }
  return arr;
}

static napi_value js_live_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  live_t *l = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&l) != napi_ok || !l) return NULL;
  live_close(l);
  return NULL;
}

/* devices() -> [{name, description?, addresses: [string], loopback, up, running}] (pcap_findalldevs). */
static napi_value js_devices(napi_env env, napi_callback_info info) {
  pcap_if_t *all = NULL;
  char errbuf[PCAP_ERRBUF_SIZE];
  if (pcap_findalldevs(&all, errbuf) < 0) return throw_live(env, "devices", errbuf, PCAP_ERROR);
  napi_value arr;
  CHECK(napi_create_array(env, &arr));
  uint32_t i = 0;
  for (pcap_if_t *d = all; d; d = d->next) {
    napi_value e, addrs;
    if (napi_create_object(env, &e) != napi_ok || napi_create_array(env, &addrs) != napi_ok) break;
    set_str(env, e, "name", d->name);
    if (d->description) set_str(env, e, "description", d->description);
    set_bool(env, e, "loopback", (d->flags & PCAP_IF_LOOPBACK) != 0);
    set_bool(env, e, "up", (d->flags & PCAP_IF_UP) != 0);
    set_bool(env, e, "running", (d->flags & PCAP_IF_RUNNING) != 0);
    uint32_t k = 0;
    for (pcap_addr_t *a = d->addresses; a; a = a->next) {
      if (!a->addr) continue;
      char txt[64] = "";
      if (a->addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)a->addr)->sin_addr, txt, sizeof txt);
      else if (a->addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->addr)->sin6_addr, txt, sizeof txt);
      if (!*txt) continue;
      napi_value s;
      if (napi_create_string_utf8(env, txt, NAPI_AUTO_LENGTH, &s) == napi_ok) napi_set_element(env, addrs, k++, s);
    }
    napi_set_named_property(env, e, "addresses", addrs);
    napi_set_element(env, arr, i++, e);
  }
  pcap_freealldevs(all);
  return arr;
}

/*
 * notify(state): systemd's sd_notify, without libsystemd: one datagram of
 * `state` ("READY=1", "RELOADING=1", "STOPPING=1") to the socket
 * $NOTIFY_SOCKET names (a path, or '@' for the abstract namespace). True if
 * it was sent; false when riff does not run under a Type=notify service.
 * With it, systemd counts riff started once the capture is open, so a
 * `systemctl reload` right after a start waits for riff's SIGHUP handler
 * instead of killing Node while it boots.
 */
static napi_value js_notify(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  char state[128];
  size_t n = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], state, sizeof state, &n) != napi_ok)
    return throw_type(env, "notify(state): state must be a string");
  const char *path = getenv("NOTIFY_SOCKET");
  bool sent = false;
  struct sockaddr_un sa;
  size_t len = path ? strlen(path) : 0;
  if (len > 0 && len < sizeof sa.sun_path && (path[0] == '/' || path[0] == '@')) {
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      sent = sendto(fd, state, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == (ssize_t)n;
      close(fd);
    }
  }
  CHECK(napi_get_boolean(env, sent, &out));
  return out;
}

/*
 * The capture thread's writes (stdout, stderr, json:FILE, -w) must never
 * block in the kernel: Node hears SIGINT and SIGTERM on that thread's event
 * loop, and a write(2) to a reader that stopped reading would hold it, and
 * riff, past SIGTERM (and past a second Ctrl-C) for as long as the reader
 * sleeps. writeNow() takes what the descriptor takes without waiting;
 * waitWritable() waits a bounded time for room; interrupts() counts the
 * signals as they arrive, in C, so the JavaScript waiting for room knows of
 * them before its event loop can run (src/outputs/fd-sink.ts).
 */
static atomic_uint interrupts_int, interrupts_term;
static struct sigaction prior_int, prior_term;

/* Counts, then hands the signal to the handler that was there (libuv's, which wakes Node's loop). */
static void on_interrupt(int sig, siginfo_t *si, void *uc) {
  int saved = errno;
  atomic_fetch_add(sig == SIGINT ? &interrupts_int : &interrupts_term, 1);
  struct sigaction *prior = sig == SIGINT ? &prior_int : &prior_term;
  errno = saved;
  if (prior->sa_flags & SA_SIGINFO) prior->sa_sigaction(sig, si, uc);
  else if (prior->sa_handler != SIG_DFL && prior->sa_handler != SIG_IGN) prior->sa_handler(sig);
}

/* Put on_interrupt in front of the handler Node installed (riff's process.on, src/signals.ts); once. */
static void watch_interrupt(int sig, struct sigaction *prior) {
  struct sigaction now;
  if (sigaction(sig, NULL, &now) != 0) return;
  if ((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_interrupt) return;
  if (!(now.sa_flags & SA_SIGINFO) && (now.sa_handler == SIG_DFL || now.sa_handler == SIG_IGN)) return;
  *prior = now;
  struct sigaction sa = now;
  sa.sa_sigaction = on_interrupt;
  sa.sa_flags = now.sa_flags | SA_SIGINFO;
  sigaction(sig, &sa, NULL);
}

/* interrupts() -> [SIGINT count, SIGTERM count]; the first call starts counting. */
static napi_value js_interrupts(napi_env env, napi_callback_info info) {
  (void)info;
  static int watching = 0;
  if (!watching) {
    watching = 1;
    watch_interrupt(SIGINT, &prior_int);
    watch_interrupt(SIGTERM, &prior_term);
  }
  napi_value arr, v;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_uint32(env, atomic_load(&interrupts_int), &v));
  CHECK(napi_set_element(env, arr, 0, v));
  CHECK(napi_create_uint32(env, atomic_load(&interrupts_term), &v));
  CHECK(napi_set_element(env, arr, 1, v));
  return arr;
}

/*
 * noWaitOpen(fd) -> [how, wfd]: how to write to fd without waiting, found
 * once per descriptor (its owner keeps the answer, src/outputs/fd-sink.ts
 * FdWriter). A pipe, FIFO or terminal gets a description of its own with
 * O_NONBLOCK (reopened through /proc/self/fd: the flag on the shared one
 * would change it for the shell and the other processes that share it):
 * how 0 and that descriptor, closed with noWaitClose. Without one (a FIFO
 * with no reader at this moment, no /proc): a pipe or FIFO is written with
 * pwritev2's RWF_NOWAIT (2), else, and where the kernel lacks that, a
 * write of at most PIPE_BUF bytes once poll() says there is room (3: the
 * kernel then takes a pipe's whole, unless another writer fills it in
 * between). A socket: send() with MSG_DONTWAIT (1). Anything else (a file,
 * /dev/null) waits for no reader: a plain write (0, fd itself).
 */
static napi_value js_no_wait_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], arr, v;
  int32_t fd = -1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_int32(env, argv[0], &fd);
  int how = 0, wfd = fd;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    if (S_ISSOCK(st.st_mode)) how = 1;
    else if (S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && isatty(fd))) {
      int fl = fcntl(fd, F_GETFL);
      if (fl >= 0 && (fl & O_NONBLOCK)) how = 0;
      else {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int twin = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (twin >= 0) wfd = twin;
        else how = S_ISFIFO(st.st_mode) ? 2 : 3;
      }
    }
  }
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_int32(env, how, &v));
  CHECK(napi_set_element(env, arr, 0, v));
  CHECK(napi_create_int32(env, wfd, &v));
  CHECK(napi_set_element(env, arr, 1, v));
  return arr;
}

/* noWaitClose(wfd): a descriptor noWaitOpen opened. */
static napi_value js_no_wait_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1 && napi_get_value_int32(env, argv[0], &fd) == napi_ok && fd > 2) close(fd);
  return NULL;
}

/* writeNow(wfd, buffer, offset, length, how) -> bytes written, or -errno (-EAGAIN: no room now). */
static napi_value js_write_now(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], out;
  int32_t fd = -1, how = 0;
  int64_t off = 0, len = 0;
  void *data = NULL;
  size_t size = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok ||
      napi_get_value_int64(env, argv[2], &off) != napi_ok || napi_get_value_int64(env, argv[3], &len) != napi_ok ||
      napi_get_value_int32(env, argv[4], &how) != napi_ok || off < 0 || len < 0 || (uint64_t)off + (uint64_t)len > size) {
    napi_throw_type_error(env, NULL, "writeNow(wfd, buffer, offset, length, how)");
    return NULL;
  }
  const char *p = (const char *)data + off;
  ssize_t n;
  for (;;) {
    if (how == 1) n = send(fd, p, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
    else if (how == 2) {
      struct iovec v = {(void *)p, (size_t)len};
      n = pwritev2(fd, &v, 1, -1, RWF_NOWAIT);
      if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) how = 3;
      else break;
      continue;
    } else if (how == 3) {
      struct pollfd pf = {fd, POLLOUT, 0};
      int r = poll(&pf, 1, 0);
      if (r > 0 && (pf.revents & POLLOUT)) n = write(fd, p, (size_t)(len < PIPE_BUF ? len : PIPE_BUF));
      else if (r > 0) n = write(fd, p, len > 0 ? 1 : 0); /* POLLERR/POLLHUP: write() says what it is (EPIPE) */
      else {
        n = -1;
        errno = r < 0 ? errno : EAGAIN;
      }
    } else n = write(fd, p, (size_t)len);
    if (n < 0 && errno == EINTR) continue; /* a signal came: it is counted; the write is not done */
    break;
  }
  if (n < 0 && (errno == EWOULDBLOCK || errno == EINTR)) errno = EAGAIN;
  CHECK(napi_create_int64(env, n >= 0 ? (int64_t)n : -(int64_t)errno, &out));
  return out;
}

/* waitWritable(fd, ms): until fd has room, an error to report, a signal, or ms have passed. */
static napi_value js_wait_writable(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, ms = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_int32(env, argv[0], &fd);
  if (argc >= 2) napi_get_value_int32(env, argv[1], &ms);
  struct pollfd pf = {fd, POLLOUT, 0};
  poll(&pf, 1, ms < 0 ? 0 : ms);
  return NULL;
}

/*
 * exitNow(code): end the process at once, with code. riff writes its output
 * synchronously to its own descriptors, so nothing is left to flush when it
 * is called; process.exit() would first wait for V8's compiler threads to
 * finish the functions they are compiling (the Lua interpreter's tier-up to
 * TurboFan, which a short run never uses) and for the worker threads to be
 * torn down: tens of milliseconds at the end of every run.
 */
static napi_value js_exit_now(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t code = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_int32(env, argv[0], &code);
  fflush(NULL);
  _exit(code & 0xff);
}

/*
 * trimMemory(): give the C library's free memory back to the system
 * (glibc's malloc_trim: every arena's free pages, not only its top).
 * Each thread that allocates gets its own arena, and a page freed in the
 * middle of one stays resident: V8's compiler threads' zones, a reload's
 * worker thread and its isolate, a burst of records left arenas mostly free
 * and resident, so resident memory climbed for minutes towards their
 * high-water marks. Returns false where there is no such call.
 */
static napi_value js_trim_memory(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
#ifdef __GLIBC__
  malloc_trim(0);
  CHECK(napi_get_boolean(env, true, &out));
#else
  CHECK(napi_get_boolean(env, false, &out));
#endif
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"compile", NULL, js_compile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"apply", NULL, js_apply, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dlt", NULL, js_dlt, NULL, NULL, NULL, napi_enumerable, NULL},
      {"version", NULL, js_version, NULL, NULL, NULL, napi_enumerable, NULL},
      {"copy", NULL, js_copy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pcapRecords", NULL, js_pcap_records, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shardPlan", NULL, js_shard_plan, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shardCopy", NULL, js_shard_copy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"liveOpen", NULL, js_live_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"liveWatch", NULL, js_live_watch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"liveRead", NULL, js_live_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"liveStats", NULL, js_live_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"liveClose", NULL, js_live_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"devices", NULL, js_devices, NULL, NULL, NULL, napi_enumerable, NULL},
      {"exitNow", NULL, js_exit_now, NULL, NULL, NULL, napi_enumerable, NULL},
      {"notify", NULL, js_notify, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimMemory", NULL, js_trim_memory, NULL, NULL, NULL, napi_enumerable, NULL},
      {"interrupts", NULL, js_interrupts, NULL, NULL, NULL, napi_enumerable, NULL},
      {"noWaitOpen", NULL, js_no_wait_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"noWaitClose", NULL, js_no_wait_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeNow", NULL, js_write_now, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitWritable", NULL, js_wait_writable, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  return exports;
}
