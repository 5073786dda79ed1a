/**
 * The tracking benchmark's clicks at a fixed rate (part 1b): an open loop of GETs to one server, each sent at its
 * scheduled time whatever the answers, over keep-alive node:http connections on a worker thread. A production
 * instance is autoscaled to run well below its saturation, where the closed loop of part 1 measures; this is the
 * latency a click sees there. Each latency runs from the request's scheduled time, so a server that falls behind
 * is charged for the wait (no coordinated omission).
 */
import { browserUserAgent, visitorIpSource } from './closed-loop';
import { latencySummary, pooledLatencies } from './load';
import { runWorker } from './worker';

const fixedRateWorker = `
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { parentPort, workerData: d } = require('node:worker_threads');
const target = new URL(d.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
${visitorIpSource}
const total = Math.max(1, Math.round(d.rate * d.seconds));
const latencies = new Float64Array(total);
const lag = new Float64Array(total);
const statusCodes = {};
let answered = 0;
let errors = 0;
let sent = 0;
const t0 = performance.now() + 50;
function send(i) {
  const scheduled = t0 + (i * 1000) / d.rate;
  lag[i] = performance.now() - scheduled;
  const req = http.request({ host: target.hostname, port: target.port, path: d.path, method: 'GET', agent,
    headers: { 'user-agent': d.userAgent, 'x-forwarded-for': ipOf(d.ipStart + i) } }, (res) => {
    res.resume();
    res.on('end', () => {
      latencies[answered++] = performance.now() - scheduled;
      statusCodes[res.statusCode] = (statusCodes[res.statusCode] || 0) + 1;
      if (answered + errors === total) finish();
    });
  });
  req.setTimeout(10000, () => req.destroy(new Error('timeout')));
  req.on('error', () => { errors++; if (answered + errors === total) finish(); });
  req.end();
}
function tick() {
  const due = Math.min(total, Math.floor(((performance.now() - t0) * d.rate) / 1000) + 1);
  while (sent < due) send(sent++);
  if (sent < total) setTimeout(tick, 1);
}
function finish() {
  const out = latencies.slice(0, answered);
  parentPort.postMessage({ latencies: out, lag, statusCodes, errors, sent: total }, [out.buffer, lag.buffer]);
}
setTimeout(tick, 50);
`;

export interface FixedRateResult {
  label: string;
  rate: number;
  sent: number;
  ok: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** How late the sender itself was (ms after each request's scheduled time): part of every latency above. */
  lagP99: number;
  lagMax: number;
  /** The answered requests' latencies, ascending, and the sender's lateness, ascending: what pooling merges. */
  sorted: Float64Array;
  lagSorted: Float64Array;
  /** Rounds pooled into this result (1 for one measurement). */
  rounds: number;
  /** Each round's p99, in order: the spread the pooled figure hides. */
  roundP99s: number[];
}

let ipCounter = 1 << 22;

/** `rate` GETs of `path` per second to `url` for `seconds`; 302 counts as success. */
export async function fixedRate(label: string, o: { url: string; path: string; rate: number; seconds: number }, signal: AbortSignal): Promise<FixedRateResult> {
  const ipStart = ipCounter;
  ipCounter += 1 << 20;
  const reply = await runWorker<{ latencies: Float64Array; lag: Float64Array; statusCodes: Record<string, number>; errors: number; sent: number }>(
    fixedRateWorker,
    { url: o.url, path: o.path, rate: o.rate, seconds: o.seconds, userAgent: browserUserAgent, ipStart },
    signal,
  );
  const sorted = Float64Array.from(reply.latencies).sort();
  const lagSorted = Float64Array.from(reply.lag).sort();
  const lag = latencySummary(lagSorted);
  const summary = latencySummary(sorted);
  return { label, rate: o.rate, sent: reply.sent, ok: reply.statusCodes['302'] ?? 0, errors: reply.errors, ...summary, lagP99: lag.p99, lagMax: lag.max, sorted, lagSorted, rounds: 1, roundP99s: [summary.p99] };
}

/**
 * One server's fixed-rate rounds as one sample: a single 5 s round holds a stall or two at most, so its p99 swings
 * with whether one landed in it (C' read 61-768 ms over six single rounds in session 9).
 */
export function poolFixedRate(rounds: FixedRateResult[]): FixedRateResult {
  const first = rounds[0]!;
  if (rounds.length === 1) return first;
  const sorted = pooledLatencies(rounds.map((r) => r.sorted));
  const lagSorted = pooledLatencies(rounds.map((r) => r.lagSorted));
  const lag = latencySummary(lagSorted);
  return {
    ...first,
    sent: rounds.reduce((t, r) => t + r.sent, 0),
    ok: rounds.reduce((t, r) => t + r.ok, 0),
    errors: rounds.reduce((t, r) => t + r.errors, 0),
    ...latencySummary(sorted),
    lagP99: lag.p99,
    lagMax: lag.max,
    sorted,
    lagSorted,
    rounds: rounds.length,
    roundP99s: rounds.map((r) => r.p99),
  };
}
