/**
 * The tracking benchmark's closed-loop load (parts 1 and 2): autocannon on a worker thread, a new visitor per
 * request, and for postbacks a fresh txn_id and a valid click id per request; plus the tables it prints.
 */
import { latencySummary, pooledLatencies, summedStatusCodes } from './load';
import { ms, percent, rate, ratio, table } from './report';
import { runWorker } from './worker';

/** A desktop Chrome, so that the click function does not classify the benchmark's clicks as bots. */
export const browserUserAgent = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';

// The load generator runs on a worker thread (plain CommonJS evaluated in the worker, independent of the
// TypeScript loader; see worker.ts), so that it never shares an event loop with the bench driver or the stack.

/**
 * Worker source (plain JavaScript, spliced into each load generator's) for the i-th request's X-Forwarded-For: an
 * address in 198.18.0.0/15, the benchmarking range, so every request is a visitor of its own.
 */
export const visitorIpSource = `const ipOf = (i) => '198.' + (18 + ((i >>> 16) & 1)) + '.' + ((i >>> 8) & 255) + '.' + (i & 255);`;

/**
 * Closed loop with autocannon (keep-alive, pipelining 1), like load.ts, plus what that one cannot do:
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
${visitorIpSource}
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

export interface ClosedLoopResult {
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
  /** CPU used while it was measured, % of one core, by process group (filled in by the caller). */
  cpu?: Record<string, number>;
  /** What limited it (filled in by the caller), e.g. the server's core. */
  limit?: string;
  /** Every response time, ms, sorted: kept so that rounds can be pooled. */
  sorted: Float64Array;
  /** Rounds pooled into this result (1 for a single run). */
  rounds: number;
}

let seqCounter = 0;

export interface ClosedLoopOptions {
  url: string;
  path: string;
  connections: number;
  seconds: number;
  /** The status that counts as success. */
  expect: number;
  headers?: Record<string, string>;
  /** Postbacks: each request gets the next of these click ids and a txn_id of txnPrefix + a sequence number. */
  clickIds?: string[];
  txnPrefix?: string;
}

export async function closedLoop(label: string, o: ClosedLoopOptions, signal: AbortSignal): Promise<ClosedLoopResult> {
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
    sorted,
    rounds: 1,
  };
}

/**
 * Rounds of one scenario as one result: responses and seconds summed, percentiles over every response, CPU
 * averaged by time. Measuring the scenarios in alternating rounds and pooling them keeps a drift of the
 * machine (another process, the emulators' housekeeping) from landing on one scenario only.
 */
export function poolRounds(rounds: ClosedLoopResult[]): ClosedLoopResult {
  const first = rounds[0]!;
  if (rounds.length === 1) return first;
  const seconds = rounds.reduce((t, r) => t + r.seconds, 0);
  const ok = rounds.reduce((t, r) => t + r.ok, 0);
  const sorted = pooledLatencies(rounds.map((r) => r.sorted));
  const groups = [...new Set(rounds.flatMap((r) => Object.keys(r.cpu ?? {})))];
  const cpu = groups.length ? Object.fromEntries(groups.map((g) => [g, rounds.reduce((t, r) => t + (r.cpu?.[g] ?? 0) * r.seconds, 0) / seconds])) : undefined;
  const limits = [...new Set(rounds.map((r) => r.limit).filter((l): l is string => l !== undefined))];
  return {
    ...first,
    seconds,
    responses: sorted.length,
    ok,
    perSec: sorted.length / seconds,
    okPerSec: ok / seconds,
    ...latencySummary(sorted),
    errors: rounds.reduce((t, r) => t + r.errors, 0),
    timeouts: rounds.reduce((t, r) => t + r.timeouts, 0),
    statusCodes: summedStatusCodes(rounds.map((r) => r.statusCodes)),
    cpu,
    limit: limits.length ? limits.join(' / ') : undefined,
    sorted,
    rounds: rounds.length,
  };
}

export function closedLoopTable(rows: ClosedLoopResult[]): string {
  const cpuGroups = [...new Set(rows.flatMap((r) => Object.keys(r.cpu ?? {})))];
  const limits = rows.some((r) => r.limit !== undefined);
  return table(
    ['scenario', 'conns', 'responses', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'expected', 'other statuses', 'errors', ...cpuGroups.map((g) => `${g} CPU`), ...(limits ? ['limited by'] : [])],
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
      ...cpuGroups.map((g) => percent(r.cpu?.[g])),
      ...(limits ? [r.limit ?? '-'] : []),
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'r', ...cpuGroups.map(() => 'r' as const), 'l'],
  );
}

export function closedLoopRatios(rows: ClosedLoopResult[], base: ClosedLoopResult): string {
  return table(
    ['scenario', 'req/s / base', 'p50 / base', 'p99 / base'],
    rows.map((r) => [r.label, ratio(r.okPerSec / base.okPerSec), ratio(r.p50 / base.p50), ratio(r.p99 / base.p99)]),
  );
}
