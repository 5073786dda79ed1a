import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runWorker } from './worker';

/**
 * Closed-loop HTTP load with autocannon: `connections` keep-alive connections, each sending its next request
 * as soon as the previous answer arrives (pipelining 1), for a fixed duration or a fixed number of requests.
 *
 * autocannon runs in a worker thread, not on this thread, because the benchmarks serve the system under
 * test from this process: a load generator on the same event loop would steal the server's time and make
 * every server look slower than it is. Latencies are taken from each response's own hrtime measurement
 * (autocannon's histogram keeps whole milliseconds only, which flattens a sub-millisecond baseline to 0).
 */
export interface LoadOptions {
  url: string;
  connections: number;
  /** Seconds. Ignored when `amount` is set. */
  durationSeconds?: number;
  /** Stop after this many requests instead of after a duration. */
  amount?: number;
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD';
  headers?: Record<string, string>;
  body?: string;
  /** Per-request timeout, seconds (autocannon counts a timeout as an error). */
  timeoutSeconds?: number;
  /** Aborting stops the load at once and rejects. */
  signal?: AbortSignal;
}

export interface LoadResult {
  url: string;
  connections: number;
  /** Wall time of the run, seconds. */
  durationSeconds: number;
  /** Responses received, whatever their status. */
  responses: number;
  /** responses / durationSeconds. */
  requestsPerSec: number;
  /** Latency percentiles over every response, milliseconds. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  /** Connection errors and timeouts. */
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  /** Every response time in ms, sorted ascending; kept so that runs can be pooled (see mergeResults). */
  latenciesMs: Float64Array;
}

interface WorkerReply {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  latencies: Float64Array;
}

// Plain CommonJS evaluated in the worker, so that it does not depend on the TypeScript loader of the parent.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const autocannon = require(workerData.autocannonPath);
let latencies = new Float64Array(1 << 16);
let n = 0;
const statusCodes = {};
const instance = autocannon(workerData.options, (err, result) => {
  if (err) { parentPort.postMessage({ error: 'autocannon failed: ' + String(err && err.stack || err) }); return; }
  const out = latencies.slice(0, n);
  parentPort.postMessage({
    duration: result.duration, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx,
    statusCodes, latencies: out,
  }, [out.buffer]);
});
instance.on('response', (_client, statusCode, _bytes, responseTime) => {
  if (n === latencies.length) { const grown = new Float64Array(n * 2); grown.set(latencies); latencies = grown; }
  latencies[n++] = responseTime;
  statusCodes[statusCode] = (statusCodes[statusCode] || 0) + 1;
});
`;

export const autocannonVersion: string = (() => {
  const pkg = JSON.parse(readFileSync(join(dirname(require.resolve('autocannon')), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
})();

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  opts.signal?.throwIfAborted();
  const options = {
    url: opts.url,
    connections: opts.connections,
    pipelining: 1,
    method: opts.method ?? 'GET',
    headers: opts.headers ?? {},
    ...(opts.body !== undefined ? { body: opts.body } : {}),
    ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationSeconds ?? 10 }),
    timeout: opts.timeoutSeconds ?? 10,
  };
  const reply = await runWorker<WorkerReply>(workerSource, { autocannonPath: require.resolve('autocannon'), options }, opts.signal);
  return summarise(opts.url, opts.connections, reply.duration, reply.latencies, {
    errors: reply.errors,
    timeouts: reply.timeouts,
    non2xx: reply.non2xx,
    statusCodes: reply.statusCodes,
  });
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: Float64Array, p: number): number {
  if (!sorted.length) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** The latency figures every benchmark table shows, from an ascending array (NaN when it is empty). */
export function latencySummary(sorted: Float64Array): { p50: number; p90: number; p99: number; max: number } {
  return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN };
}

function summarise(
  url: string,
  connections: number,
  durationSeconds: number,
  latencies: Float64Array,
  counts: Pick<LoadResult, 'errors' | 'timeouts' | 'non2xx' | 'statusCodes'>,
): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    url,
    connections,
    durationSeconds,
    responses: sorted.length,
    requestsPerSec: durationSeconds > 0 ? sorted.length / durationSeconds : Number.NaN,
    ...latencySummary(sorted),
    mean: sorted.length ? sum / sorted.length : Number.NaN,
    ...counts,
    latenciesMs: sorted,
  };
}

/** Every response time of several runs as one ascending array, so that percentiles are over all of them. */
export function pooledLatencies(runs: readonly Float64Array[]): Float64Array {
  const all = new Float64Array(runs.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of runs) {
    all.set(r, at);
    at += r.length;
  }
  return all.sort();
}

/** Responses by status code, summed over several runs. */
export function summedStatusCodes(runs: readonly Record<string, number>[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const r of runs) for (const [code, n] of Object.entries(r)) sum[code] = (sum[code] ?? 0) + n;
  return sum;
}

/** Pools several runs of the same scenario (e.g. repeated rounds): percentiles over all responses, rate over total time. */
export function mergeResults(results: LoadResult[]): LoadResult {
  const first = results[0];
  if (!first) throw new Error('mergeResults needs at least one result');
  const sum = (f: (r: LoadResult) => number) => results.reduce((n, r) => n + f(r), 0);
  return summarise(first.url, first.connections, sum((r) => r.durationSeconds), pooledLatencies(results.map((r) => r.latenciesMs)), {
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
    non2xx: sum((r) => r.non2xx),
    statusCodes: summedStatusCodes(results.map((r) => r.statusCodes)),
  });
}
