/**
 * Benchmark of the tracking hot path on the real local stack (the code `npm start` runs, on the real Pub/Sub
 * and Firestore emulators, started here on free ports). One run prints three parts, each quoted against
 * baselines measured in the same run:
 *
 *   1. Clicks, closed loop (autocannon, 302 = success, redirects not followed): A a bare node:http 302, B a
 *      bare Functions Framework function that only redirects, C the real click function through the gateway
 *      (GET /c/{linkId}?sub1=bench) with the push workers running in this process as under `npm start`, and
 *      C' the same with the push subscriptions removed (the click function alone, as production runs it:
 *      workers elsewhere). D, a diagnostic, is a bare Functions Framework function that awaits one publish
 *      (the click function's batching, to a topic nobody subscribes to) and then redirects.
 *   2. Postbacks, closed loop: GET /postback with a unique txn_id and a valid click id per request (set per
 *      request by autocannon's setupRequest in the load worker), alone (P') and with the workers (P), against
 *      B at the same concurrency.
 *   3. End to end, open loop: clicks and postbacks at a fixed rate; a sample of them is followed until it is
 *      visible through the API (click document, its own report row, conversion document), and the delivered
 *      totals are sampled over time. Baseline: the same measurement for a trickle of events on a quiet stack.
 *
 * Between parts the workers' backlog is dropped (the push subscriptions are recreated) so that no part pays
 * for the one before. Diagnostics ("where the time goes"): an awaited publish alone with the click function's
 * batching, with maxMessages 1 and with the client's default 10 ms window; the link cache's hit and miss
 * paths; the emulator's push concurrency; DuckDB single-row against batched inserts.
 * Prints figures only; it never asserts timings.
 *
 *   npx tsx scripts/bench/tracking.ts [--connections 50] [--duration 8] [--rate 500] [--e2e-seconds 30] [--skip-e2e] …  (--help)
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startBareServer, type BareServer } from './lib/bare-server';
import { failureCode, parseFlags, runMain } from './lib/cli';
import { autocannonVersion, latencySummary, percentile } from './lib/load';
import { ms, rate, ratio, table } from './lib/report';
import { abortOnSignals, startBenchStack, stopBenchStackAndReport, type BenchStack } from './lib/stack';
import { runWorker } from './lib/worker';
import { cpus, loadavg, release, totalmem, type as osType } from 'node:os';

const usage = `usage: npx tsx scripts/bench/tracking.ts [options]
  --connections N         click load: concurrent keep-alive connections (default 50)
  --duration S            click load: measured seconds per scenario (default 8)
  --warmup S              unmeasured seconds of load before each closed-loop scenario (default 1; 0 to skip)
  --postback-connections N  postback load: connections (default 20)
  --postback-duration S   postback load: measured seconds (default 8)
  --rate N                end to end: events per second sent, open loop (default 500)
  --e2e-seconds S         end to end: seconds of sending (default 30)
  --clicks-per-postback N end to end: one postback after every N clicks (default 10; 0 for clicks only)
  --sample-clicks N       end to end: follow every Nth click to Firestore and the report (default 20)
  --sample-postbacks N    end to end: follow every Nth postback to its conversion (default 4)
  --poll-ms N             end to end: poll interval for a followed event while it is younger than 2 s (default 100)
  --poll-budget N         end to end: at most N polls per second for all followed events together (default 0: 10% of --rate, at least 20)
  --settle S              end to end: how long to keep following after the last event was sent (default 15)
  --skip-clicks, --skip-postbacks, --skip-e2e, --skip-diagnostics   leave a part out`;

const intSpec = {
  connections: { default: 50, min: 1, max: 1000 },
  duration: { default: 8, min: 1, max: 600 },
  warmup: { default: 1, min: 0, max: 600 },
  'postback-connections': { default: 20, min: 1, max: 1000 },
  'postback-duration': { default: 8, min: 1, max: 600 },
  rate: { default: 500, min: 1, max: 20_000 },
  'e2e-seconds': { default: 30, min: 1, max: 3600 },
  'clicks-per-postback': { default: 10, min: 0, max: 1000 },
  'sample-clicks': { default: 20, min: 1, max: 100_000 },
  'sample-postbacks': { default: 4, min: 1, max: 100_000 },
  'poll-ms': { default: 100, min: 10, max: 10_000 },
  'poll-budget': { default: 0, min: 0, max: 100_000 },
  settle: { default: 15, min: 1, max: 600 },
} as const;
const boolFlags = ['skip-clicks', 'skip-postbacks', 'skip-e2e', 'skip-diagnostics'] as const;
type Flags = Record<keyof typeof intSpec, number> & Record<(typeof boolFlags)[number], boolean>;

const parse = (argv: string[]): Flags => parseFlags(argv, usage, intSpec, boolFlags);

const progress = (msg: string) => process.stderr.write(`${msg}\n`);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
/** A desktop Chrome, so that the click function does not classify the benchmark's clicks as bots. */
const browserUserAgent = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';
const shopUrl = 'https://shop.example.com/';

// ---------------------------------------------------------------------------------------------------------
// Worker threads. The system under test is served from this process, so every load generator runs on a
// thread of its own (plain CommonJS evaluated in the worker, independent of the TypeScript loader; see lib/worker.ts).

/**
 * Closed loop with autocannon (keep-alive, pipelining 1), like lib/load.ts, plus what that one cannot do:
 * a distinct X-Forwarded-For per request (198.18.0.0/15, the benchmarking range: every click is a new
 * visitor, so the state worker's per-visitor documents do not turn into one hot document) and, for
 * postbacks, a fresh txn_id and a click id from a pre-minted pool per request. autocannon does not follow
 * redirects; every status is counted, and the caller decides which one is success (302 for clicks).
 */
const closedLoopWorker = `
const { parentPort, workerData: d } = require('node:worker_threads');
const autocannon = require(d.autocannonPath);
let latencies = new Float64Array(1 << 16);
let n = 0;
let seq = 0;
const statusCodes = {};
const ipOf = (i) => '198.' + (18 + ((i >>> 16) & 1)) + '.' + ((i >>> 8) & 255) + '.' + (i & 255);
function setupRequest(req) {
  const i = d.seqStart + seq++;
  req.headers['x-forwarded-for'] = ipOf(i);
  if (d.clickIds) req.path = d.path + '&click_id=' + encodeURIComponent(d.clickIds[i % d.clickIds.length]) + '&txn_id=' + d.txnPrefix + i;
  return req;
}
const instance = autocannon({
  url: d.url, connections: d.connections, pipelining: 1, duration: d.duration, timeout: d.timeout,
  headers: d.headers, requests: [{ method: 'GET', path: d.path, setupRequest }],
}, (err, result) => {
  if (err) { parentPort.postMessage({ error: String((err && err.stack) || err) }); return; }
  const out = latencies.slice(0, n);
  parentPort.postMessage({ duration: result.duration, errors: result.errors, timeouts: result.timeouts, statusCodes, latencies: out, requests: seq }, [out.buffer]);
});
instance.on('response', (_client, statusCode, _bytes, responseTime) => {
  if (n === latencies.length) { const grown = new Float64Array(n * 2); grown.set(latencies); latencies = grown; }
  latencies[n++] = responseTime;
  statusCodes[statusCode] = (statusCodes[statusCode] || 0) + 1;
});
`;

interface ClosedLoopReply {
  duration: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  latencies: Float64Array;
  requests: number;
}

interface ClosedLoopResult {
  label: string;
  connections: number;
  seconds: number;
  responses: number;
  /** Responses with the expected status. */
  ok: number;
  expect: number;
  perSec: number;
  okPerSec: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
}

let seqCounter = 0;

async function closedLoop(
  label: string,
  o: { url: string; path: string; connections: number; seconds: number; expect: number; headers?: Record<string, string>; clickIds?: string[]; txnPrefix?: string },
  signal: AbortSignal,
): Promise<ClosedLoopResult> {
  const seqStart = seqCounter;
  seqCounter += 1 << 20;
  const reply = await runWorker<ClosedLoopReply>(
    closedLoopWorker,
    {
      autocannonPath: require.resolve('autocannon'),
      url: o.url,
      path: o.path,
      connections: o.connections,
      duration: o.seconds,
      timeout: 10,
      headers: { 'user-agent': browserUserAgent, ...o.headers },
      clickIds: o.clickIds,
      txnPrefix: o.txnPrefix,
      seqStart,
    },
    signal,
  );
  const sorted = Float64Array.from(reply.latencies).sort();
  const ok = reply.statusCodes[String(o.expect)] ?? 0;
  return {
    label,
    connections: o.connections,
    seconds: reply.duration,
    responses: sorted.length,
    ok,
    expect: o.expect,
    perSec: sorted.length / reply.duration,
    okPerSec: ok / reply.duration,
    ...latencySummary(sorted),
    errors: reply.errors,
    timeouts: reply.timeouts,
    statusCodes: reply.statusCodes,
  };
}

function closedLoopTable(rows: ClosedLoopResult[]): string {
  return table(
    ['scenario', 'conns', 'responses', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'expected', 'other statuses', 'errors'],
    rows.map((r) => [
      r.label,
      String(r.connections),
      String(r.responses),
      rate(r.okPerSec),
      ms(r.p50),
      ms(r.p90),
      ms(r.p99),
      ms(r.max),
      `${r.expect} x${r.ok}`,
      Object.entries(r.statusCodes).filter(([c]) => c !== String(r.expect)).map(([c, n]) => `${c} x${n}`).join(', ') || '-',
      String(r.errors),
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'r'],
  );
}

function closedLoopRatios(rows: ClosedLoopResult[], base: ClosedLoopResult): string {
  return table(
    ['scenario', 'req/s / base', 'p50 / base', 'p99 / base'],
    rows.map((r) => [r.label, ratio(r.okPerSec / base.okPerSec), ratio(r.p50 / base.p50), ratio(r.p99 / base.p99)]),
  );
}

/**
 * End to end, open loop: events leave at fixed times whatever the answers (a slow server does not slow the
 * sender down, unlike autocannon's closed loop), over keep-alive node:http connections. For a sample, the
 * worker polls the API until the event is visible and records (answer that showed it) - (request start).
 */
const openLoopWorker = `
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { parentPort, workerData: d } = require('node:worker_threads');
const base = new URL(d.baseUrl);
const sendAgent = new http.Agent({ keepAlive: true, maxSockets: 2048 });
const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const now = () => performance.now();
const sleep = (t) => new Promise((r) => setTimeout(r, t));
const ipOf = (i) => '198.' + (18 + ((i >>> 16) & 1)) + '.' + ((i >>> 8) & 255) + '.' + (i & 255);
const auth = { authorization: 'Bearer ' + d.token };

function get(agent, path, headers, timeoutMs) {
  return new Promise((resolve) => {
    const started = now();
    const done = (r) => resolve(Object.assign({ started, ended: now() }, r));
    const req = http.request({ host: base.hostname, port: base.port, path, method: 'GET', agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => done({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', (e) => done({ status: 0, error: String(e) }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => done({ status: 0, error: String(e) }));
    req.end();
  });
}

const total = Math.max(1, Math.round(d.rate * d.seconds));
const cycle = d.clicksPerPostback > 0 ? d.clicksPerPostback + 1 : 0;
const out = {
  total, clicksSent: 0, postbacksSent: 0, clickStatus: {}, postbackStatus: {}, clickLatency: [], postbackLatency: [], sendLag: [],
  firstSend: 0, lastSend: 0, lastAnswer: 0, inFlightMax: 0,
  samples: [], polls: 0, pollLatency: [], pollErrors: 0, reportPolls: 0, reportPollLatency: [], pollStart: 0, pollEnd: 0, followersMax: 0, pollWait: [],
};
let inFlight = 0;
let clickNo = 0;
let postbackNo = 0;
let generating = true;
let hardDeadline = Infinity;
const reportPending = new Map();

// Followed events are polled by one scheduler with a budget (polls per second, at most 16 in flight), so
// that a growing backlog cannot turn the measurement into a load of its own: when many events are waiting,
// each is polled less often (coarser resolution), and the output says so.
const followers = new Set();
let pollsInFlight = 0;
let tokens = 1;
let refilled = now();
function interval(age) { return age < 2000 ? d.pollMs : Math.min(1000, Math.max(d.pollMs, age / 8)); }
function follow(path, sentAt) {
  return new Promise((resolve) => {
    if (now() > hardDeadline) { resolve(undefined); return; }
    followers.add({ path, sentAt, due: now() + d.pollMs, resolve });
    if (followers.size > out.followersMax) out.followersMax = followers.size;
  });
}
function pump() {
  const t = now();
  tokens = Math.min(Math.max(2, d.pollBudget / 5), tokens + ((t - refilled) * d.pollBudget) / 1000);
  refilled = t;
  if (t > hardDeadline) { for (const f of followers) f.resolve(undefined); followers.clear(); return; }
  if (tokens < 1 || pollsInFlight >= 16) return;
  const due = [...followers].filter((f) => f.due <= t).sort((a, b) => a.due - b.due);
  for (const f of due) {
    if (tokens < 1 || pollsInFlight >= 16) break;
    tokens -= 1;
    pollsInFlight++;
    out.pollWait.push(t - f.due);
    f.due = Infinity;
    get(pollAgent, f.path, auth, 10000).then((r) => {
      pollsInFlight--;
      out.polls++;
      out.pollLatency.push(r.ended - r.started);
      if (r.status === 200) { followers.delete(f); f.resolve(r.ended); return; }
      if (r.status !== 404) out.pollErrors++;
      f.due = now() + interval(now() - f.sentAt);
    });
  }
}

async function reportLoop() {
  while (generating || reportPending.size) {
    await sleep(d.reportPollMs);
    if (now() > hardDeadline) break;
    if (!reportPending.size) continue;
    const r = await get(pollAgent, d.reportPath, auth, 20000);
    out.reportPolls++;
    out.reportPollLatency.push(r.ended - r.started);
    if (r.status !== 200) { out.pollErrors++; continue; }
    for (const row of JSON.parse(r.body).rows) {
      const s = reportPending.get(row.sub1);
      if (s && row.clicks > 0) { s.reportAt = r.ended; reportPending.delete(row.sub1); }
    }
  }
}

const following = [];
function fire(i, scheduled) {
  const sentAt = now();
  out.sendLag.push(sentAt - scheduled);
  if (!out.firstSend) out.firstSend = sentAt;
  out.lastSend = sentAt;
  inFlight++;
  if (inFlight > out.inFlightMax) out.inFlightMax = inFlight;
  const isPostback = cycle > 0 && i % cycle === cycle - 1;
  if (!isPostback) {
    const c = clickNo++;
    out.clicksSent++;
    const sampled = c % d.sampleClicks === 0;
    const sub1 = sampled ? d.tag + '-' + c : d.tag + '-bulk';
    get(sendAgent, '/c/' + d.linkId + '?sub1=' + encodeURIComponent(sub1), { 'user-agent': d.userAgent, 'x-forwarded-for': ipOf(d.ipStart + c) }, 30000).then((r) => {
      inFlight--;
      out.lastAnswer = r.ended;
      out.clickStatus[r.status] = (out.clickStatus[r.status] || 0) + 1;
      out.clickLatency.push(r.ended - r.started);
      if (!sampled || r.status !== 302) return;
      const clickId = new URL(r.headers.location).searchParams.get('cid');
      const s = { kind: 'click', sentAt: r.started, answeredAt: r.ended };
      out.samples.push(s);
      reportPending.set(sub1, s);
      following.push(follow('/v1/orgs/' + d.orgId + '/clicks/' + encodeURIComponent(clickId), r.started).then((t) => { s.firestoreAt = t; }));
    });
  } else {
    const p = postbackNo++;
    out.postbacksSent++;
    const sampled = p % d.samplePostbacks === 0;
    const clickId = d.clickIds[p % d.clickIds.length];
    const path = '/postback?token=' + encodeURIComponent(d.postbackToken) + '&click_id=' + encodeURIComponent(clickId) + '&txn_id=' + d.tag + '-' + p + '&amount=10.00';
    get(sendAgent, path, { 'user-agent': 'advertiser-server/1.0' }, 30000).then((r) => {
      inFlight--;
      out.lastAnswer = r.ended;
      out.postbackStatus[r.status] = (out.postbackStatus[r.status] || 0) + 1;
      out.postbackLatency.push(r.ended - r.started);
      if (!sampled || r.status !== 200) return;
      const id = JSON.parse(r.body).conversionId;
      const s = { kind: 'postback', sentAt: r.started, answeredAt: r.ended };
      out.samples.push(s);
      following.push(follow('/v1/orgs/' + d.orgId + '/conversions/' + encodeURIComponent(id), r.started).then((t) => { s.conversionAt = t; }));
    });
  }
}

async function main() {
  const period = 1000 / d.rate;
  const t0 = now() + 20;
  out.pollStart = t0;
  const pumping = setInterval(pump, 5);
  const reporting = reportLoop();
  let next = 0;
  while (next < total) {
    const t = now();
    while (next < total && t0 + next * period <= t) { fire(next, t0 + next * period); next++; }
    if (next < total) await sleep(Math.max(0, Math.min(4, t0 + next * period - now())));
  }
  generating = false;
  hardDeadline = now() + d.settleMs;
  // Wait for every answer, then for every followed event (or the deadline).
  while (inFlight > 0 && now() < hardDeadline) await sleep(20);
  while (followers.size && now() <= hardDeadline + 50) await sleep(20);
  pump();
  await Promise.all(following);
  await reporting;
  clearInterval(pumping);
  out.pollEnd = now();
  out.unanswered = inFlight;
  out.reportUnseen = reportPending.size;
  out.t0 = t0;
  parentPort.postMessage(out);
}
main().catch((err) => parentPort.postMessage({ error: String((err && err.stack) || err) }));
`;

interface OpenLoopSample {
  kind: 'click' | 'postback';
  sentAt: number;
  answeredAt: number;
  firestoreAt?: number;
  reportAt?: number;
  conversionAt?: number;
}

interface OpenLoopReply {
  total: number;
  clicksSent: number;
  postbacksSent: number;
  clickStatus: Record<string, number>;
  postbackStatus: Record<string, number>;
  clickLatency: number[];
  postbackLatency: number[];
  sendLag: number[];
  firstSend: number;
  lastSend: number;
  lastAnswer: number;
  inFlightMax: number;
  samples: OpenLoopSample[];
  polls: number;
  pollLatency: number[];
  pollErrors: number;
  reportPolls: number;
  reportPollLatency: number[];
  followersMax: number;
  /** How long each poll waited past its due time for the budget: the resolution lost to it. */
  pollWait: number[];
  pollStart: number;
  pollEnd: number;
  unanswered: number;
  reportUnseen: number;
  t0: number;
}

interface OpenLoopOptions {
  baseUrl: string;
  orgId: string;
  token: string;
  linkId: string;
  campaignId: string;
  postbackToken: string;
  clickIds: string[];
  rate: number;
  seconds: number;
  clicksPerPostback: number;
  sampleClicks: number;
  samplePostbacks: number;
  pollMs: number;
  pollBudget: number;
  reportPollMs: number;
  settleSeconds: number;
  tag: string;
  ipStart: number;
}

function openLoop(o: OpenLoopOptions, signal: AbortSignal): Promise<OpenLoopReply> {
  const today = new Date().toISOString().slice(0, 10);
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  return runWorker<OpenLoopReply>(
    openLoopWorker,
    {
      ...o,
      settleMs: o.settleSeconds * 1000,
      userAgent: browserUserAgent,
      reportPath: `/v1/orgs/${o.orgId}/reports?from=${today}&to=${tomorrow}&groupBy=sub1&campaignId=${encodeURIComponent(o.campaignId)}`,
    },
    signal,
  );
}

const sortedOf = (xs: number[]) => Float64Array.from(xs).sort();

interface DelayStats {
  n: number;
  seen: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function delays(samples: OpenLoopSample[], kind: OpenLoopSample['kind'], at: 'firestoreAt' | 'reportAt' | 'conversionAt' | 'answeredAt'): DelayStats {
  const mine = samples.filter((s) => s.kind === kind);
  const all = mine.map((s) => (s[at] === undefined || s[at] === null ? Number.POSITIVE_INFINITY : s[at]! - s.sentAt));
  const sorted = sortedOf(all);
  const seen = all.filter(Number.isFinite).length;
  return { n: mine.length, seen, ...latencySummary(sorted) };
}

// ---------------------------------------------------------------------------------------------------------

function environment(): string[] {
  const cpu = cpus();
  return [
    `node ${process.version} on ${osType()} ${release()} (${process.arch}), ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
    `closed-loop load: autocannon ${autocannonVersion} in a worker thread, keep-alive, pipelining 1; open-loop load: node:http keep-alive in a worker thread`,
  ];
}

/** The batching the click function's publisher uses, read from the adapter's source so that the probe follows it. */
function currentBatching(): { maxMessages?: number; maxMilliseconds?: number } | undefined {
  try {
    const src = readFileSync(join(__dirname, '../../functions/adapters/pubsub.ts'), 'utf8');
    const block = /batching:\s*\{([^}]*)\}/.exec(src)?.[1];
    if (!block) return undefined;
    const num = (name: string) => {
      const m = new RegExp(`${name}:\\s*([\\d_]+)`).exec(block);
      return m ? Number(m[1]!.replaceAll('_', '')) : undefined;
    };
    return { maxMessages: num('maxMessages'), maxMilliseconds: num('maxMilliseconds') };
  } catch {
    return undefined;
  }
}

const describeBatching = (b: { maxMessages?: number; maxMilliseconds?: number } | undefined) =>
  b ? `maxMessages ${b.maxMessages ?? 'default'}, maxMilliseconds ${b.maxMilliseconds ?? 'default'}` : 'client defaults (maxMessages 100, maxMilliseconds 10)';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

async function closeServer(server: Server | undefined): Promise<void> {
  if (!server?.listening) return;
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

interface Counts {
  statsClicks: number;
  statsConversions: number;
  reportClicks: number;
  reportConversions: number;
}

async function main(flags: Flags): Promise<number> {
  const signal = abortOnSignals(progress);
  const started = Date.now();
  const startLoad = loadavg()[0]!;
  let stack: BenchStack | undefined;
  let bare: BareServer | undefined;
  const servers: Server[] = [];
  let failed = false;
  let quiesce: (() => Promise<void>) | undefined;
  const out: string[] = [];
  try {
    progress('Starting the Pub/Sub and Firestore emulators on free ports, then the stack…');
    stack = await startBenchStack({ signal });
    const st = stack;
    const base = st.baseUrl;
    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);

    // Read only now: these modules read ABP_DATA_DIR and the emulator hosts on first use.
    const { mintClickId } = await import('../../shared/domain/click-id');
    const { secrets } = await import('../../functions/adapters/local-secrets');
    const { pubsub } = await import('../../functions/adapters/pubsub');
    const { resolveLink } = await import('../../functions/services/link-resolver');
    const ff = await import('@google-cloud/functions-framework');
    const { getTestServer } = await import('@google-cloud/functions-framework/testing');

    progress(`Stack at ${base}; creating an org, an affiliate, three campaigns and their links…`);
    const token = st.token('bench-tracking@example.com');
    const api = async (method: string, path: string, body?: unknown) => {
      const r = await st.request(method, path, { token, signal, body });
      if (r.status >= 300) throw new Error(`${method} ${path} failed: ${r.status} ${r.text.slice(0, 300)}`);
      return JSON.parse(r.text) as Record<string, unknown>;
    };
    const orgId = (await api('POST', '/v1/orgs', { name: 'Tracking Benchmark Org', type: 'advertiser', plan: 'professional' })).id as string;
    const affiliateId = (await api('POST', `/v1/orgs/${orgId}/affiliates`, { name: 'Bench Affiliate', email: 'bench-aff@example.com' })).id as string;
    const campaign = async (name: string) =>
      (await api('POST', `/v1/orgs/${orgId}/campaigns`, {
        name,
        destinationUrl: 'https://shop.example.com/landing?cid={click_id}&s1={sub1}&aff={affiliate_id}',
        status: 'active',
        currency: 'USD',
        payout: { type: 'cpa', amount: 500 },
        revenue: { type: 'cpa', amount: 800 },
      })).id as string;
    const link = async (campaignId: string) => (await api('POST', `/v1/orgs/${orgId}/links`, { campaignId, affiliateId })).id as string;
    const campaigns = { clicks: await campaign('Bench clicks'), postbacks: await campaign('Bench postbacks'), e2e: await campaign('Bench end to end') };
    const links = { clicks: await link(campaigns.clicks), postbacks: await link(campaigns.postbacks), e2e: await link(campaigns.e2e) };
    const postbackToken = (await api('GET', `/v1/orgs/${orgId}/postback-config`)).token as string;
    const signingKey = secrets().clickSigningKey;
    const mintPool = (linkId: string, n: number) => Array.from({ length: n }, () => mintClickId(signingKey, linkId, Date.now() - 60_000));

    const counts = async (key: keyof typeof campaigns): Promise<Counts> => {
      const q = `from=${today}&to=${tomorrow}&campaignId=${campaigns[key]}`;
      const [stats, report] = await Promise.all([api('GET', `/v1/orgs/${orgId}/stats?${q}`), api('GET', `/v1/orgs/${orgId}/reports?${q}`)]);
      const s = stats.totals as { clicks: number; conversions: number };
      const r = report.totals as { clicks: number; conversions: number };
      return { statsClicks: s.clicks, statsConversions: s.conversions, reportClicks: r.clicks, reportConversions: r.conversions };
    };

    // The workers run in this process, pushed to by the emulator. Between parts their backlog is dropped
    // (the push subscriptions are recreated, as `npm start` creates them) so that no part pays for the one
    // before; for the "alone" scenarios the push subscriptions are removed, so nothing runs downstream.
    const { provisionPubSub } = await import('../local/pubsub-setup');
    const { subscriptions } = await import('../../shared/names');
    const workersOff = async () => {
      for (const name of [subscriptions.stateWriter, subscriptions.analyticsWriter]) await pubsub().subscription(name).delete().catch(() => undefined);
      await sleep(1500); // let pushes already under way finish
    };
    quiesce = workersOff; // before stopping: no push should still be running when the clients close
    const workersFresh = async () => {
      await provisionPubSub(base);
      await sleep(1500);
    };

    // A sanity click and postback: the whole path works, and the click is a human's, not a bot's.
    {
      const res = await fetch(`${base}/c/${links.clicks}?sub1=sanity`, { redirect: 'manual', headers: { 'user-agent': browserUserAgent, 'x-forwarded-for': '198.19.255.254' } });
      const cid = new URL(res.headers.get('location') ?? 'http://x/').searchParams.get('cid');
      if (res.status !== 302 || !cid) throw new Error(`The sanity click answered ${res.status}, location ${res.headers.get('location')}`);
      let doc: { isBot?: boolean } | undefined;
      for (let i = 0; i < 100 && !doc; i++) {
        const r = await st.request('GET', `/v1/orgs/${orgId}/clicks/${cid}`, { token, signal });
        if (r.status === 200) doc = JSON.parse(r.text) as { isBot: boolean };
        else await sleep(100);
      }
      if (!doc) throw new Error('The sanity click never reached Firestore');
      if (doc.isBot) throw new Error('The benchmark user agent is classified as a bot');
      const pb = await fetch(`${base}/postback?token=${postbackToken}&click_id=${encodeURIComponent(mintPool(links.postbacks, 1)[0]!)}&txn_id=sanity-1&amount=10.00`);
      const body = (await pb.json()) as { status?: string };
      if (pb.status !== 200 || body.status !== 'accepted') throw new Error(`The sanity postback answered ${pb.status} ${JSON.stringify(body)}`);
    }

    // The baselines: a bare node:http 302 (A) and a bare Functions Framework function that only redirects (B).
    bare = await startBareServer(`Found. Redirecting to ${shopUrl}`, { status: 302, headers: { location: shopUrl, 'content-type': 'text/plain; charset=utf-8' } });
    ff.http('bareRedirect', (_req, res) => res.redirect(302, shopUrl));
    const bareFf = getTestServer('bareRedirect');
    servers.push(bareFf);
    const bareFfUrl = await listen(bareFf);

    // D: the Functions Framework plus one awaited publish, with the click function's batching, to a topic
    // without subscriptions (nothing downstream runs).
    const batching = currentBatching();
    const probeTopicName = 'bench-publish-probe';
    await pubsub().createTopic(probeTopicName).catch((err: { code?: number }) => {
      if (err.code !== 6) throw err;
    });
    const probeTopic = pubsub().topic(probeTopicName, batching ? { batching } : {});
    const sampleEvent = Buffer.from(
      JSON.stringify({
        type: 'click', eventId: mintPool(links.clicks, 1)[0], orgId, linkId: links.clicks, campaignId: campaigns.clicks, affiliateId, occurredAt: new Date().toISOString(),
        sub1: 'bench', sub2: null, sub3: null, sub4: null, sub5: null, visitorHash: 'x'.repeat(22), ipHash: 'y'.repeat(22), ipPrefix: '198.18.0.0/24', country: null,
        device: 'desktop', os: 'Windows', browser: 'Chrome', referrer: null, isBot: false, botReason: null,
      }),
    );
    ff.http('benchPublishRedirect', async (_req, res) => {
      await probeTopic.publishMessage({ data: sampleEvent, attributes: { type: 'click', orgId, eventId: 'probe' } });
      res.redirect(302, shopUrl);
    });
    const publishFf = getTestServer('benchPublishRedirect');
    servers.push(publishFf);
    const publishFfUrl = await listen(publishFf);

    const configLines = [
      `configuration: --connections ${flags.connections} --duration ${flags.duration} --warmup ${flags.warmup} --postback-connections ${flags['postback-connections']} --postback-duration ${flags['postback-duration']}`,
      `               --rate ${flags.rate} --e2e-seconds ${flags['e2e-seconds']} --clicks-per-postback ${flags['clicks-per-postback']} --sample-clicks ${flags['sample-clicks']} --sample-postbacks ${flags['sample-postbacks']}`,
      `               --poll-ms ${flags['poll-ms']} --poll-budget ${flags['poll-budget'] || `${Math.max(20, Math.round(flags.rate / 10))} (10% of rate)`} --settle ${flags.settle}${boolFlags.filter((b) => flags[b]).map((b) => ` --${b}`).join('')}`,
      `click function publisher batching (read from functions/adapters/pubsub.ts): ${describeBatching(batching)}; LINK_CACHE_TTL_SECONDS ${process.env.LINK_CACHE_TTL_SECONDS ?? '10 (default)'}`,
    ];
    out.push('', 'Tracking hot path on the local stack', ...environment(), ...configLines);

    // ---- Diagnostics first, on a quiet stack: the awaited publish alone, and the link cache.
    const diag: string[] = [];
    if (!flags['skip-diagnostics']) {
      progress('Diagnostics: an awaited publish alone (three batching settings), the link cache…');
      const settings: [string, { maxMessages?: number; maxMilliseconds?: number } | undefined][] = [
        [`click function's (${describeBatching(batching)})`, batching],
        ['maxMessages 1 (no batching)', { maxMessages: 1 }],
        ['client default (10 ms window)', undefined],
      ];
      const rows: string[][] = [];
      for (const [name, b] of settings) {
        const topic = pubsub().topic(probeTopicName, b ? { batching: b } : {});
        const publish = () => topic.publishMessage({ data: sampleEvent, attributes: { type: 'click', orgId, eventId: 'probe' } });
        for (let i = 0; i < 20; i++) await publish(); // warm the channel
        const seq: number[] = [];
        for (let i = 0; i < 150; i++) {
          const t = performance.now();
          await publish();
          seq.push(performance.now() - t);
        }
        const conc: number[] = [];
        const until = performance.now() + 2000;
        const loops = Array.from({ length: flags.connections }, async () => {
          while (performance.now() < until) {
            const t = performance.now();
            await publish();
            conc.push(performance.now() - t);
          }
        });
        const t0 = performance.now();
        await Promise.all(loops);
        const secs = (performance.now() - t0) / 1000;
        const s1 = sortedOf(seq);
        const s2 = sortedOf(conc);
        rows.push([name, ms(percentile(s1, 50)), ms(percentile(s1, 99)), rate(conc.length / secs), ms(percentile(s2, 50)), ms(percentile(s2, 99))]);
        signal.throwIfAborted();
      }
      diag.push(
        '',
        `Where the time goes (a): one awaited publishMessage to the emulator from this process, 150 one at a time, then ${flags.connections} concurrent loops for 2 s`,
        table(['batching', 'alone p50 ms', 'alone p99 ms', `x${flags.connections} publishes/s`, `x${flags.connections} p50 ms`, `x${flags.connections} p99 ms`], rows),
      );

      // The link cache: a hit is a Map lookup and an already settled promise; a miss reads three documents.
      await resolveLink(links.clicks);
      const hits = 20_000;
      const th = performance.now();
      for (let i = 0; i < hits; i++) await resolveLink(links.clicks);
      const hitUs = ((performance.now() - th) * 1000) / hits;
      const missMs: number[] = [];
      for (let i = 0; i < 5; i++) {
        const fresh = await link(campaigns.clicks);
        const t = performance.now();
        await resolveLink(fresh);
        missMs.push(performance.now() - t);
      }
      const missSorted = sortedOf(missMs);
      diag.push(
        '',
        `Where the time goes (b): the link cache (functions/services/link-resolver.ts)`,
        `  hit:  ${hitUs.toFixed(2)} µs per awaited resolveLink (${hits} in a row)`,
        `  miss: ${ms(percentile(missSorted, 50))} ms median, ${ms(missSorted[missSorted.length - 1]!)} ms max over 5 fresh links (link index + getAll(campaign, org)); a warm instance pays it once per link per TTL`,
      );

      // The emulator's push delivery: how many pushes per subscription it keeps in flight, against a trivial
      // endpoint that answers after a fixed 20 ms (about what a state-writer transaction takes here).
      const pushDelayMs = 20;
      let inflight = 0;
      let maxInflight = 0;
      let delivered = 0;
      const sink = createServer((req, res) => {
        inflight++;
        maxInflight = Math.max(maxInflight, inflight);
        req.resume();
        req.on('end', () =>
          setTimeout(() => {
            inflight--;
            delivered++;
            res.writeHead(204).end();
          }, pushDelayMs),
        );
      });
      servers.push(sink);
      const sinkUrl = await listen(sink);
      const pushTopic = 'bench-push-probe';
      const pushSub = 'bench-push-probe-sink';
      await pubsub().createTopic(pushTopic).catch((err: { code?: number }) => {
        if (err.code !== 6) throw err;
      });
      await pubsub().topic(pushTopic).createSubscription(pushSub, { pushConfig: { pushEndpoint: `${sinkUrl}/push` }, ackDeadlineSeconds: 30 });
      const pushN = 200;
      const tp = performance.now();
      const pushPublisher = pubsub().topic(pushTopic, batching ? { batching } : {});
      await Promise.all(Array.from({ length: pushN }, () => pushPublisher.publishMessage({ data: sampleEvent })));
      while (delivered < pushN && performance.now() - tp < 10_000) await sleep(20);
      const pushSecs = (performance.now() - tp) / 1000;
      await pubsub().subscription(pushSub).delete().catch(() => undefined);
      await closeServer(sink);

      // The analytics store (DuckDB): one row per insert, as the analytics worker writes, against 100 rows per insert.
      const { analyticsStore } = await import('../../functions/adapters/analytics');
      const { clickRow } = await import('../../functions/workers/analytics-writer');
      const probeEvent = JSON.parse(sampleEvent.toString()) as Parameters<typeof clickRow>[0];
      const row = (i: number) => clickRow({ ...probeEvent, orgId: 'bench-probe-org', eventId: `probe-${i}` });
      let k = 0;
      const single: number[] = [];
      const ts = performance.now();
      while (performance.now() - ts < 1000) {
        const t = performance.now();
        await analyticsStore().insert([row(k++)]);
        single.push(performance.now() - t);
      }
      const batchMs: number[] = [];
      for (let i = 0; i < 10; i++) {
        const rows = Array.from({ length: 100 }, () => row(k++));
        const t = performance.now();
        await analyticsStore().insert(rows);
        batchMs.push(performance.now() - t);
      }
      const singleMed = percentile(sortedOf(single), 50);
      const batchMed = percentile(sortedOf(batchMs), 50);
      diag.push(
        '',
        'Where the time goes (c): delivery to the workers',
        `  Pub/Sub emulator push: ${delivered}/${pushN} messages in ${pushSecs.toFixed(1)} s = ${rate(delivered / pushSecs)}/s to an endpoint that answers in ${pushDelayMs} ms; at most ${maxInflight} pushes in flight`,
        `  (per subscription): a push worker here gets through at most ~${maxInflight} / its own latency, whatever the CPU.`,
        `  DuckDB insert (analytics worker): one row per insert ${ms(singleMed)} ms median (${rate(1000 / singleMed)} rows/s, the store serialises inserts);`,
        `  100 rows per insert ${ms(batchMed)} ms median (${rate((100 * 1000) / batchMed)} rows/s).`,
      );
    }

    // ---- 1. Clicks, closed loop.
    const clickRows: ClosedLoopResult[] = [];
    let duringC: { before: Counts; after: Counts; seconds: number; answered: number } | undefined;
    if (!flags['skip-clicks']) {
      const clickPath = `/c/${links.clicks}?sub1=bench`;
      const scenarios = [
        { key: 'A', label: 'A  bare node:http 302', url: bare.url },
        { key: 'B', label: 'B  bare Functions Framework redirect', url: bareFfUrl },
        ...(flags['skip-diagnostics'] ? [] : [{ key: 'D', label: 'D  FF + awaited publish (diagnostic)', url: publishFfUrl }]),
        { key: "C'", label: "C' click function alone (no push subscriptions)", url: base },
        { key: 'C', label: 'C  click function, workers in-process (npm start)', url: base },
      ];
      for (const s of scenarios) {
        if (s.key === "C'") await workersOff();
        if (s.key === 'C') await workersFresh();
        const before = s.key === 'C' ? await counts('clicks') : undefined;
        const t = performance.now();
        let answered = 0;
        if (flags.warmup > 0) {
          progress(`  warm-up  ${s.label} (${flags.warmup} s)`);
          answered += (await closedLoop(s.label, { url: s.url, path: clickPath, connections: flags.connections, seconds: flags.warmup, expect: 302 }, signal)).ok;
        }
        progress(`  measure  ${s.label} (${flags.duration} s)`);
        const r = await closedLoop(s.label, { url: s.url, path: clickPath, connections: flags.connections, seconds: flags.duration, expect: 302 }, signal);
        clickRows.push(r);
        if (before) duringC = { before, after: await counts('clicks'), seconds: (performance.now() - t) / 1000, answered: answered + r.ok };
      }
      await workersFresh();
    }

    // ---- 2. Postbacks, closed loop.
    const postbackRows: ClosedLoopResult[] = [];
    if (!flags['skip-postbacks']) {
      const pool = mintPool(links.postbacks, 5000);
      const pc = flags['postback-connections'];
      const runId = Math.random().toString(36).slice(2, 8);
      const pbPath = `/postback?token=${encodeURIComponent(postbackToken)}&amount=10.00`;
      const scenarios = [
        { key: 'B', label: 'B  bare Functions Framework redirect', url: bareFfUrl, expect: 302, extra: {} },
        { key: "P'", label: "P' postback function alone (no push subscriptions)", url: base, expect: 200, extra: { clickIds: pool, txnPrefix: `pb1-${runId}-` } },
        { key: 'P', label: 'P  postback function, workers in-process', url: base, expect: 200, extra: { clickIds: pool, txnPrefix: `pb2-${runId}-` } },
      ];
      for (const s of scenarios) {
        if (s.key === "P'") await workersOff();
        if (s.key === 'P') await workersFresh();
        if (flags.warmup > 0) {
          progress(`  warm-up  ${s.label} @${pc} (${flags.warmup} s)`);
          await closedLoop(s.label, { url: s.url, path: pbPath, connections: pc, seconds: flags.warmup, expect: s.expect, ...s.extra }, signal);
        }
        progress(`  measure  ${s.label} @${pc} (${flags['postback-duration']} s)`);
        postbackRows.push(await closedLoop(s.label, { url: s.url, path: pbPath, connections: pc, seconds: flags['postback-duration'], expect: s.expect, ...s.extra }, signal));
      }
      await workersFresh();
    }

    // ---- 3. End to end, open loop.
    let e2e: { idle: OpenLoopReply; load: OpenLoopReply; before: Counts; after: Counts; timeline: { t: number; c: Counts }[]; answered: { clicks: number; postbacks: number } } | undefined;
    if (!flags['skip-e2e']) {
      const pool = mintPool(links.e2e, 5000);
      const common = {
        baseUrl: base, orgId, token, linkId: links.e2e, campaignId: campaigns.e2e, postbackToken, clickIds: pool,
        pollMs: flags['poll-ms'], reportPollMs: Math.max(flags['poll-ms'], 250), settleSeconds: flags.settle,
      };
      progress('  end to end, idle baseline: 12 events at 4/s, every one followed…');
      const idle = await openLoop({ ...common, pollBudget: 50, rate: 4, seconds: 3, clicksPerPostback: 2, sampleClicks: 1, samplePostbacks: 1, tag: 'idle', ipStart: 70_000 }, signal);
      const before = await counts('e2e');
      progress(`  end to end: ${flags.rate} events/s for ${flags['e2e-seconds']} s, then up to ${flags.settle} s to see the followed ones…`);
      // Delivered totals over time, from this thread: two cheap queries every 2 s.
      const timeline: { t: number; c: Counts }[] = [];
      let sampling = true;
      const t0 = performance.now();
      const sampler = (async () => {
        while (sampling) {
          await sleep(2000);
          if (!sampling) break;
          const c = await counts('e2e').catch(() => undefined);
          if (c) timeline.push({ t: (performance.now() - t0) / 1000, c });
        }
      })();
      let load: OpenLoopReply;
      try {
        load = await openLoop(
          {
            ...common, rate: flags.rate, seconds: flags['e2e-seconds'], clicksPerPostback: flags['clicks-per-postback'],
            sampleClicks: flags['sample-clicks'], samplePostbacks: flags['sample-postbacks'], tag: 'e2e', ipStart: 80_000,
            pollBudget: flags['poll-budget'] || Math.max(20, Math.round(flags.rate / 10)),
          },
          signal,
        );
      } finally {
        sampling = false;
        await sampler;
      }
      const after = await counts('e2e');
      timeline.push({ t: (performance.now() - t0) / 1000, c: after });
      e2e = { idle, load, before, after, timeline, answered: { clicks: load.clickStatus['302'] ?? 0, postbacks: load.postbackStatus['200'] ?? 0 } };
    }

    // ---- Report.
    if (clickRows.length) {
      const byKey = (k: string) => clickRows.find((r) => r.label.startsWith(`${k} `));
      const a = byKey('A')!;
      const b = byKey('B')!;
      const c = byKey('C')!;
      const cAlone = byKey("C'")!;
      const d = byKey('D');
      const goals = (x: ClosedLoopResult, name: string) =>
        `  ${name}: ${x.label.slice(0, 2).trim()}/B throughput ${ratio(x.okPerSec / b.okPerSec)} (goal >= 0.8: ${x.okPerSec / b.okPerSec >= 0.8 ? 'met' : 'missed'}), p99 ${ms(x.p99)} ms (goal < 20 ms: ${x.p99 < 20 ? 'met' : 'missed'})`;
      out.push(
        '',
        `1. Clicks, closed loop: ${flags.connections} connections, ${flags.duration} s per scenario after ${flags.warmup} s warm-up; GET /c/{linkId}?sub1=bench, desktop Chrome`,
        '   user agent, a new X-Forwarded-For per request (198.18.0.0/15); 302 is the success status (autocannon does not follow redirects);',
        '   req/s counts 302s only',
        closedLoopTable(clickRows),
        '',
        'as multiples of B (bare Functions Framework redirect):',
        closedLoopRatios(clickRows.filter((r) => r !== b && r !== a), b),
        '',
        'as multiples of A (bare node:http):',
        closedLoopRatios(clickRows.filter((r) => r !== a), a),
        '',
        goals(c, 'as npm start runs it'),
        goals(cAlone, 'the click function alone'),
      );
      if (d) {
        out.push(
          `  B -> D  the awaited publish (same batching, topic without subscribers): ${ms(b.p50)} -> ${ms(d.p50)} ms p50, req/s x${(d.okPerSec / b.okPerSec).toFixed(2)}`,
          `  D -> C' the rest of the click function (gateway routing, link cache, HMACs, UA parsing, cookie, macros): ${ms(d.p50)} -> ${ms(cAlone.p50)} ms p50, req/s x${(cAlone.okPerSec / d.okPerSec).toFixed(2)}`,
        );
      }
      out.push(
        `  C' -> C with the two push subscriptions in place (the emulator keeps and pushes every click twice; the state and analytics`,
        `          workers run in this process and write to the emulators): ${ms(cAlone.p50)} -> ${ms(c.p50)} ms p50, req/s x${(c.okPerSec / cAlone.okPerSec).toFixed(2)}`,
      );
      if (duringC) {
        const { before, after, seconds, answered } = duringC;
        out.push(
          `  while C ran (${seconds.toFixed(0)} s incl. warm-up, ${answered} clicks answered) the workers got ${after.statsClicks - before.statsClicks} into the Firestore counters (${rate((after.statsClicks - before.statsClicks) / seconds)}/s)`,
          `  and ${after.reportClicks - before.reportClicks} into the report (${rate((after.reportClicks - before.reportClicks) / seconds)}/s); the rest was dropped before part 2.`,
        );
      }
      out.push(
        '  A, B, C, C\' and D all run in this one Node process, on the same 2 cores as the Pub/Sub and Firestore emulators (two JVMs)',
        '  and the load generator\'s worker thread.',
      );
    }
    if (postbackRows.length) {
      const b = postbackRows[0]!;
      out.push(
        '',
        `2. Postbacks, closed loop: ${flags['postback-connections']} connections, ${flags['postback-duration']} s after ${flags.warmup} s warm-up; each request a unique txn_id and a valid`,
        '   click id (minted 60 s in the past, from a pool of 5000, one link), set per request by autocannon setupRequest in the worker thread',
        closedLoopTable(postbackRows),
        '',
        'as multiples of B (bare Functions Framework redirect, same connections):',
        closedLoopRatios(postbackRows.slice(1), b),
        '  P: postback token lookup (cached), click id check, link cache, an awaited publish, then an awaited Firestore create (the receipt',
        '  that tells a retry from a first delivery).',
      );
    }
    if (e2e) {
      const { idle, load, before, after, timeline, answered } = e2e;
      const sendSecs = (load.lastSend - load.t0) / 1000;
      const lag = sortedOf(load.sendLag);
      const clickLat = sortedOf(load.clickLatency);
      const pbLat = sortedOf(load.postbackLatency);
      const fmt = (v: number) => (v === Number.POSITIVE_INFINITY ? 'not seen' : ms(v));
      const row = (label: string, s: DelayStats, idleS: DelayStats) => [
        label, `${s.seen}/${s.n}`, fmt(s.p50), fmt(s.p90), fmt(s.p99), fmt(s.max), ratio(s.p50 / idleS.p50), ratio(s.p99 / idleS.max), s.p99 < 2000 ? 'met' : 'missed',
      ];
      const idleRow = (label: string, s: DelayStats) => [label, `${s.seen}/${s.n}`, fmt(s.p50), fmt(s.max)];
      const pollSecs = (load.pollEnd - load.pollStart) / 1000;
      const statuses = (m: Record<string, number>) => Object.entries(m).map(([k, v]) => `${k} x${v}`).join(', ');
      const delivered = (c: Counts) => ({ fc: c.statsClicks - before.statsClicks, rc: c.reportClicks - before.reportClicks, fv: c.statsConversions - before.statsConversions, rv: c.reportConversions - before.reportConversions });
      const fin = delivered(after);
      const finT = timeline[timeline.length - 1]?.t ?? Number.NaN;
      const budget = flags['poll-budget'] || Math.max(20, Math.round(flags.rate / 10));
      out.push(
        '',
        `3. End to end, open loop: ${flags.rate} events/s for ${flags['e2e-seconds']} s (${flags['clicks-per-postback'] ? `1 postback after every ${flags['clicks-per-postback']} clicks` : 'clicks only'}), then up to ${flags.settle} s to settle`,
        `   sent ${load.total} events in ${sendSecs.toFixed(2)} s = ${rate(load.total / sendSecs)} events/s achieved (target ${flags.rate}); send lag behind schedule p50 ${ms(percentile(lag, 50))} ms,`,
        `   p99 ${ms(percentile(lag, 99))} ms, max ${ms(lag[lag.length - 1] ?? Number.NaN)} ms; at most ${load.inFlightMax} requests in flight; ${load.unanswered} unanswered at the end`,
        `   clicks:    ${load.clicksSent} sent, answers ${statuses(load.clickStatus)}; latency p50 ${ms(percentile(clickLat, 50))} ms, p99 ${ms(percentile(clickLat, 99))} ms`,
        `   postbacks: ${load.postbacksSent} sent, answers ${statuses(load.postbackStatus)}; latency p50 ${ms(percentile(pbLat, 50))} ms, p99 ${ms(percentile(pbLat, 99))} ms`,
        `   delivered ${finT.toFixed(0)} s after the first send: Firestore ${fin.fc} of ${answered.clicks} clicks (${rate((fin.fc / Math.max(1, answered.clicks)) * 100)}%), ${fin.fv} of ${answered.postbacks} conversions;`,
        `   report ${fin.rc} clicks (${rate((fin.rc / Math.max(1, answered.clicks)) * 100)}%), ${fin.rv} conversions`,
        ...(() => {
          // Delivery while the generator was sending, from the totals sampled every 2 s.
          const during = timeline.filter((p) => p.t <= sendSecs + 0.5);
          const last = during[during.length - 1];
          if (!last) return [];
          const x = delivered(last.c);
          const sentPerSec = answered.clicks / sendSecs;
          return [
            `   while sending (first ${last.t.toFixed(0)} s): clicks reached Firestore at ${rate(x.fc / last.t)}/s and the report at ${rate(x.rc / last.t)}/s, against ${rate(sentPerSec)} clicks/s sent;`,
            x.fc / last.t < 0.9 * sentPerSec || x.rc / last.t < 0.9 * sentPerSec
              ? '   the workers fell behind, so the backlog (and every later event\'s delay) grew for as long as the run lasted.'
              : '   the workers kept up with the sending rate.',
          ];
        })(),
        '',
        `   delay from sending the request to the first API answer that shows the event (followed: every ${flags['sample-clicks']}th click, every ${flags['sample-postbacks']}th postback;`,
        '   an event not seen by the end of the settle time counts as slower than any seen one):',
        table(
          ['path', 'seen', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'p50 / idle p50', 'p99 / idle max', 'p99 < 2 s'],
          [
            row('click -> Firestore (GET clicks/{id})', delays(load.samples, 'click', 'firestoreAt'), delays(idle.samples, 'click', 'firestoreAt')),
            row('click -> report row (its own sub1)', delays(load.samples, 'click', 'reportAt'), delays(idle.samples, 'click', 'reportAt')),
            row('postback -> conversion (GET conversions/{id})', delays(load.samples, 'postback', 'conversionAt'), delays(idle.samples, 'postback', 'conversionAt')),
          ],
        ),
        '',
        `   idle baseline (the same measurement for ${idle.total} events at 4/s, every one followed, on the otherwise quiet stack):`,
        table(
          ['path', 'seen', 'p50 ms', 'max ms'],
          [
            idleRow('click -> Firestore', delays(idle.samples, 'click', 'firestoreAt')),
            idleRow('click -> report row', delays(idle.samples, 'click', 'reportAt')),
            idleRow('postback -> conversion', delays(idle.samples, 'postback', 'conversionAt')),
          ],
        ),
        '',
        '   delivered over time (totals of this campaign from GET stats = Firestore counters and GET reports, every 2 s; "sent" is the schedule):',
        table(
          ['t s', 'sent', 'Firestore clicks', '/s', 'report clicks', '/s', 'Firestore conv.', 'report conv.'],
          timeline.map((p, i) => {
            const prev = i ? timeline[i - 1]! : { t: 0, c: before };
            const x = delivered(p.c);
            const y = delivered(prev.c);
            return [p.t.toFixed(1), String(Math.min(load.total, Math.round(flags.rate * p.t))), String(x.fc), rate((x.fc - y.fc) / (p.t - prev.t)), String(x.rc), rate((x.rc - y.rc) / (p.t - prev.t)), String(x.fv), String(x.rv)];
          }),
        ),
        '',
        '   how: the generator (a worker thread) sends on a fixed schedule whatever the answers; each followed click gets a unique sub1.',
        `   Followed clicks and postbacks are polled through the API (GET clicks/{id}, conversions/{id}) every ${flags['poll-ms']} ms while younger than 2 s, then`,
        `   every age/8 (at most 1 s), all together within a budget of ${budget} polls/s; one report query (groupBy=sub1, this campaign) every`,
        `   ${Math.max(flags['poll-ms'], 250)} ms serves all followed clicks. A delay runs to the arrival of the first answer that shows the event, so it includes`,
        '   up to one poll interval (longer when the budget is short) and the read itself: an upper bound.',
        `   polling load: ${load.polls} polls + ${load.reportPolls} report queries in ${pollSecs.toFixed(0)} s = ${rate((load.polls + load.reportPolls) / pollSecs)}/s, ${rate(((load.polls + load.reportPolls) / pollSecs / (load.total / sendSecs)) * 100)}% of the event rate;`,
        `   polls waited for the budget p50 ${ms(percentile(sortedOf(load.pollWait), 50))} ms, p99 ${ms(percentile(sortedOf(load.pollWait), 99))} ms past their due time${percentile(sortedOf(load.pollWait), 90) > flags['poll-ms'] ? ' (the budget was short: the delays above are coarser; raise --poll-budget or follow fewer events)' : ''};`,
        `   up to ${load.followersMax} events followed at once; poll answer p50 ${ms(percentile(sortedOf(load.pollLatency), 50))} ms; report query p50 ${ms(percentile(sortedOf(load.reportPollLatency), 50))} ms, p99 ${ms(percentile(sortedOf(load.reportPollLatency), 99))} ms; ${load.pollErrors} poll errors`,
      );
    }
    if (diag.length) out.push(...diag);
    out.push(
      '',
      `load average (1 min) at the start ${startLoad.toFixed(2)}, at the end ${loadavg()[0]!.toFixed(2)}: other work on this machine (another benchmark, a build)`,
      '  shares the 2 cores and moves every figure; compare runs made on a quiet machine.',
      '',
      'notes:',
      '  - The emulators are far slower than production Pub/Sub and Firestore and share the 2 cores with everything else here; read',
      '    the ratios between runs on this machine, not the absolute figures as production latencies.',
      '  - Closed loop: req/s ~= connections / mean latency. The open loop of part 3 does not slow down when the server does.',
    );
    console.log(out.join('\n'));
    return 0;
  } catch (err) {
    failed = true;
    if (out.length && !signal.aborted) console.log(out.join('\n'));
    return failureCode(err, signal);
  } finally {
    await quiesce?.().catch(() => undefined);
    await bare?.close().catch(() => undefined);
    for (const s of servers) await closeServer(s).catch(() => undefined);
    await stopBenchStackAndReport(stack, { failed, signal, started, log: progress });
  }
}

runMain(parse, usage, main);
