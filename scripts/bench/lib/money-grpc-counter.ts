import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

/**
 * A counting gRPC proxy for the Firestore emulator, for scripts/bench/money.ts. The Firestore emulator keeps no
 * request statistics, so the benchmark points the code under test (through FIRESTORE_EMULATOR_HOST) at this
 * plain HTTP/2 relay instead, which forwards every byte unchanged and decodes, on the side, just enough of the
 * Firestore v1 protobuf messages to count what Firestore bills:
 *
 *   reads   documents returned by BatchGetDocuments (`found`) and RunQuery (`document`), per collection;
 *           `missing` lookups and queries that returned nothing are counted apart (Firestore bills each as one read)
 *   writes  the Write messages of Commit RPCs that succeeded (grpc-status 0), and of BatchWrite those whose
 *           per-write status is OK, per collection (a delete is a write; an increment transform rides on its write)
 *
 * plus, per RPC method, the calls, failures by gRPC code (ABORTED = transaction contention), the summed latency and
 * the time-weighted mean number of RPCs in flight. Nothing in the product is wrapped or patched; what crosses the
 * wire is what gets counted, retries included.
 */

export interface MethodStats {
  calls: number;
  failed: number;
  /** gRPC status code → calls that ended with it (0 = OK). */
  codes: Map<number, number>;
  /** Sum of per-call latencies (call opened → trailers), in ms. Exceeds wall time when calls overlap. */
  totalMs: number;
}

export interface OpStats {
  methods: Map<string, MethodStats>;
  /** Documents returned, by collection id. */
  reads: Map<string, number>;
  /** BatchGetDocuments lookups of documents that do not exist, by collection id. */
  missing: Map<string, number>;
  /** RunQuery calls that returned no document, by collection id (the query's `from`). */
  emptyQueries: Map<string, number>;
  /** Committed writes (create, set, update, delete), by collection id. */
  writes: Map<string, number>;
  /** Writes sent but not applied (failed commit, or failed BatchWrite entry that the client may retry). */
  writesNotApplied: number;
  /** Messages that could not be decoded (compressed frames); counts above would then be low. */
  undecoded: number;
  /** Time-weighted mean of RPCs in flight, and the wall time it covers. */
  meanInFlight: number;
  maxInFlight: number;
  wallMs: number;
}

export interface CountingProxy {
  /** host:port to put in FIRESTORE_EMULATOR_HOST. */
  hostPort: string;
  /** The counts since the previous take() (or the start), then starts a new period. */
  take(): OpStats;
  close(): Promise<void>;
}

export const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

// ---- protobuf wire format: only what is needed to find a few fields ------------------------------------------------

type FieldVisitor = (field: number, wire: number, buf: Buffer, start: number, end: number, value: number) => void;

function readVarint(buf: Buffer, pos: number): [number, number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (pos >= buf.length) throw new RangeError('truncated varint');
    const b = buf[pos++]!;
    if (shift < 49) result += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [result, pos];
    shift += 7;
  }
}

/** Visits the top-level fields of one message (buf[start, end)). For length-delimited fields, [s, e) is the payload. */
function walk(buf: Buffer, start: number, end: number, visit: FieldVisitor): void {
  let pos = start;
  while (pos < end) {
    const [tag, p] = readVarint(buf, pos);
    pos = p;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, q] = readVarint(buf, pos);
      visit(field, wire, buf, pos, q, v);
      pos = q;
    } else if (wire === 2) {
      const [len, q] = readVarint(buf, pos);
      visit(field, wire, buf, q, q + len, len);
      pos = q + len;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new RangeError(`unsupported wire type ${wire}`);
    }
  }
}

/** The first length-delimited field `n` of a message, as [start, end), or undefined. */
function sub(buf: Buffer, start: number, end: number, n: number): [number, number] | undefined {
  let found: [number, number] | undefined;
  walk(buf, start, end, (f, w, _b, s, e) => {
    if (!found && f === n && w === 2) found = [s, e];
  });
  return found;
}

/** `projects/p/databases/d/documents/orgs/o/ledger/x` → `ledger`. */
function collectionOf(name: string): string {
  const parts = name.split('/');
  return parts[parts.length - 2] ?? '?';
}

function docName(buf: Buffer, doc: [number, number] | undefined): string | undefined {
  if (!doc) return undefined;
  const n = sub(buf, doc[0], doc[1], 1); // Document.name = 1
  return n ? buf.toString('utf8', n[0], n[1]) : undefined;
}

/** The collection a Write touches: Write.update (1) → Document.name, Write.delete (2), Write.transform (6) → document (1). */
function writeCollection(buf: Buffer, start: number, end: number): string {
  let name: string | undefined;
  walk(buf, start, end, (f, w, b, s, e) => {
    if (name || w !== 2) return;
    if (f === 1) name = docName(b, [s, e]);
    else if (f === 2) name = b.toString('utf8', s, e);
    else if (f === 6) name = docName(b, [s, e]);
  });
  return name ? collectionOf(name) : '?';
}

// ---- gRPC framing --------------------------------------------------------------------------------------------------

/** Splits a gRPC byte stream into messages (1 byte compressed flag, 4 bytes length, payload). */
class Frames {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onMessage: (msg: Buffer, compressed: boolean) => void) {}
  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(1);
      if (this.buf.length < 5 + len) return;
      this.onMessage(this.buf.subarray(5, 5 + len), this.buf[0] === 1);
      this.buf = this.buf.subarray(5 + len);
    }
  }
}

// ---- one RPC -------------------------------------------------------------------------------------------------------

class Call {
  readonly started = performance.now();
  /** Collections of the writes in the request, in order (Commit, BatchWrite). */
  private writes: string[] = [];
  /** Per-write outcome of a BatchWrite, from its response. */
  private batchOk: boolean[] = [];
  private docs = 0;
  private queryCollection = '?';
  private finished = false;

  constructor(readonly method: string, private readonly stats: Stats) {}

  request(msg: Buffer, compressed: boolean): void {
    if (compressed) return void this.stats.undecoded++;
    try {
      if (this.method === 'Commit' || this.method === 'BatchWrite') {
        walk(msg, 0, msg.length, (f, w, b, s, e) => {
          if (f === 2 && w === 2) this.writes.push(writeCollection(b, s, e));
        });
      } else if (this.method === 'RunQuery') {
        const q = sub(msg, 0, msg.length, 2); // structured_query
        const from = q && sub(msg, q[0], q[1], 2); // from (first)
        const id = from && sub(msg, from[0], from[1], 2); // collection_id
        if (id) this.queryCollection = msg.toString('utf8', id[0], id[1]);
      }
    } catch {
      this.stats.undecoded++;
    }
  }

  response(msg: Buffer, compressed: boolean): void {
    if (compressed) return void this.stats.undecoded++;
    try {
      if (this.method === 'BatchGetDocuments') {
        walk(msg, 0, msg.length, (f, w, b, s, e) => {
          if (w !== 2) return;
          if (f === 1) this.stats.add(this.stats.current.reads, collectionOf(docName(b, [s, e]) ?? '?'));
          else if (f === 2) this.stats.add(this.stats.current.missing, collectionOf(b.toString('utf8', s, e)));
        });
      } else if (this.method === 'RunQuery') {
        const doc = sub(msg, 0, msg.length, 1);
        if (doc) {
          this.docs++;
          this.stats.add(this.stats.current.reads, collectionOf(docName(msg, doc) ?? '?'));
        }
      } else if (this.method === 'BatchWrite') {
        walk(msg, 0, msg.length, (f, w, b, s, e) => {
          if (f !== 2 || w !== 2) return;
          let code = 0;
          walk(b, s, e, (g, x, _c, _s, _e, v) => {
            if (g === 1 && x === 0) code = v;
          });
          this.batchOk.push(code === 0);
        });
      }
    } catch {
      this.stats.undecoded++;
    }
  }

  finish(code: number): void {
    if (this.finished) return;
    this.finished = true;
    const c = this.stats.current;
    const m = c.methods.get(this.method) ?? { calls: 0, failed: 0, codes: new Map<number, number>(), totalMs: 0 };
    m.calls++;
    if (code !== 0) m.failed++;
    m.codes.set(code, (m.codes.get(code) ?? 0) + 1);
    m.totalMs += performance.now() - this.started;
    c.methods.set(this.method, m);
    if (this.method === 'RunQuery' && code === 0 && this.docs === 0) this.stats.add(c.emptyQueries, this.queryCollection);
    if (this.method === 'Commit') {
      if (code === 0) for (const w of this.writes) this.stats.add(c.writes, w);
      else c.writesNotApplied += this.writes.length;
    } else if (this.method === 'BatchWrite') {
      this.writes.forEach((w, i) => {
        if (code === 0 && this.batchOk[i]) this.stats.add(c.writes, w);
        else c.writesNotApplied++;
      });
    }
  }
}

class Stats {
  current = Stats.empty();
  private inFlight = 0;
  private since = performance.now();
  private periodStart = performance.now();
  private area = 0;
  private max = 0;

  static empty(): OpStats {
    return { methods: new Map(), reads: new Map(), missing: new Map(), emptyQueries: new Map(), writes: new Map(), writesNotApplied: 0, undecoded: 0, meanInFlight: 0, maxInFlight: 0, wallMs: 0 };
  }

  set undecoded(v: number) {
    this.current.undecoded = v;
  }
  get undecoded(): number {
    return this.current.undecoded;
  }

  add(m: Map<string, number>, key: string, n = 1): void {
    m.set(key, (m.get(key) ?? 0) + n);
  }

  private tick(): void {
    const now = performance.now();
    this.area += this.inFlight * (now - this.since);
    this.since = now;
  }

  opened(): void {
    this.tick();
    this.inFlight++;
    this.max = Math.max(this.max, this.inFlight);
  }

  closed(): void {
    this.tick();
    this.inFlight--;
  }

  take(): OpStats {
    this.tick();
    const out = this.current;
    out.wallMs = this.since - this.periodStart;
    out.meanInFlight = out.wallMs > 0 ? this.area / out.wallMs : 0;
    out.maxInFlight = this.max;
    this.current = Stats.empty();
    this.periodStart = this.since;
    this.area = 0;
    this.max = this.inFlight;
    return out;
  }
}

// ---- the relay -----------------------------------------------------------------------------------------------------

const window = 16 * 1024 * 1024;

export async function startCountingProxy(upstreamHostPort: string): Promise<CountingProxy> {
  const stats = new Stats();
  const upstreams = new Map<http2.ServerHttp2Session, http2.ClientHttp2Session>();
  const downstreams = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer({ settings: { initialWindowSize: window }, maxSessionMemory: 256 });

  const upstreamOf = (down: http2.ServerHttp2Session): http2.ClientHttp2Session => {
    let up = upstreams.get(down);
    if (!up || up.closed || up.destroyed) {
      up = http2.connect(`http://${upstreamHostPort}`, { settings: { initialWindowSize: window }, maxSessionMemory: 256 });
      up.on('error', () => undefined);
      up.once('connect', (s: http2.ClientHttp2Session) => s.setLocalWindowSize(window));
      upstreams.set(down, up);
    }
    return up;
  };

  server.on('session', (down) => {
    downstreams.add(down);
    down.on('error', () => undefined);
    down.once('connect', () => down.setLocalWindowSize(window));
    down.once('close', () => {
      downstreams.delete(down);
      upstreams.get(down)?.close();
      upstreams.delete(down);
    });
  });

  server.on('stream', (stream, headers) => {
    const path = String(headers[':path'] ?? '');
    const call = new Call(path.slice(path.lastIndexOf('/') + 1), stats);
    stats.opened();
    let ended = false;
    const end = (code: number) => {
      if (ended) return;
      ended = true;
      call.finish(code);
      stats.closed();
    };
    const fwd: http2.OutgoingHttpHeaders = { ':method': headers[':method'], ':path': path };
    for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':')) fwd[k] = v;

    const up = upstreamOf(stream.session as http2.ServerHttp2Session).request(fwd);
    const reqFrames = new Frames((m, c) => call.request(m, c));
    const resFrames = new Frames((m, c) => call.response(m, c));
    let trailers: http2.IncomingHttpHeaders | undefined;
    let trailersOnly = false;

    stream.on('error', () => undefined);
    up.on('error', () => undefined);
    stream.on('data', (chunk: Buffer) => {
      reqFrames.push(chunk);
      if (!up.write(chunk)) stream.pause();
    });
    up.on('drain', () => stream.resume());
    stream.on('end', () => up.end());

    up.on('response', (h) => {
      const out: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') || k === ':status') out[k] = v;
      if (h['grpc-status'] !== undefined) {
        // Trailers-only response (how gRPC sends most errors): one HEADERS frame that ends the stream.
        trailersOnly = true;
        end(Number(h['grpc-status']));
        if (!stream.closed) stream.respond(out, { endStream: true });
        return;
      }
      if (!stream.closed) stream.respond(out, { waitForTrailers: true });
    });
    up.on('data', (chunk: Buffer) => {
      resFrames.push(chunk);
      if (!stream.closed && !stream.write(chunk)) up.pause();
    });
    stream.on('drain', () => up.resume());
    up.on('trailers', (t) => {
      trailers = t;
    });
    up.on('end', () => {
      if (!trailersOnly && !stream.closed) stream.end();
    });
    stream.on('wantTrailers', () => {
      const send = () => {
        const t: http2.OutgoingHttpHeaders = {};
        for (const [k, v] of Object.entries(trailers ?? { 'grpc-status': '13', 'grpc-message': 'proxy: upstream ended without trailers' })) if (!k.startsWith(':')) t[k] = v;
        end(Number(t['grpc-status'] ?? 13));
        if (!stream.closed) stream.sendTrailers(t);
      };
      if (trailers) send();
      else {
        up.once('trailers', send);
        up.once('close', () => (trailers ? undefined : send()));
      }
    });
    // Either side going away early (the client cancelled, the emulator reset the stream) takes the other with it.
    stream.on('close', () => {
      if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
      end(1); // CANCELLED, unless it already finished
    });
    up.on('close', () => {
      if (!stream.closed && !stream.headersSent) stream.close(up.rstCode || http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    hostPort: `127.0.0.1:${port}`,
    take: () => stats.take(),
    close: async () => {
      for (const up of upstreams.values()) up.destroy();
      for (const down of downstreams) down.destroy();
      upstreams.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
