/**
 * Benchmark of the tracking hot path on the real local stack (the code `npm start` runs, on the real Pub/Sub
 * and Firestore emulators, started here on free ports). One run prints three parts, each quoted against
 * baselines measured in the same run.
 *
 * Processes, shaped as production runs them: the servers under test run in child processes of their own
 * (lib/hit-server.ts, started by lib/hit-process.ts), each loading only what it serves, as each function's
 * production bundle does: the click function server (C' and C), the bare Functions Framework server (B), the
 * baselines' server (A and D) and the hit server (the click, postback and pixel functions behind the local
 * gateway, for parts 2 and 3), all on the same core, the others idle while one is measured. (In one shared
 * process, B was measured in a heap the publisher's client libraries had grown, and its p99 was 19-22 ms
 * against 15-18 ms alone.) The state worker and its relay run in another child of the same kind (the state worker
 * process: it has instances of its own in production, and here it would share the bench process's one
 * JavaScript thread); this process keeps the bench driver, the load generators (worker threads) and the rest
 * of the stack: the API that part 3 polls, and the analytics worker with its relay (DuckDB admits one writing
 * process, and the API's reports read it). "The workers running" means both: the state worker in its process,
 * the analytics worker in this one. With --pin (the default on 2 or more cores) the servers under test get the
 * last core to themselves, like a 1-vCPU instance, and this process, the state worker and the emulators' JVMs are pinned
 * to the other cores (lib/layout.ts). The report says which
 * process ran on which core, and how much CPU each side used while each scenario was measured: a server
 * near 100% of its core is the limit, one well below it is waiting for something else.
 *
 *   1. Clicks, closed loop (autocannon, 302 = success, redirects not followed): A a bare node:http 302, B a
 *      bare Functions Framework function that only redirects, C the real click function on its own server
 *      (GET /c/{linkId}?sub1=bench) with the push workers running (state worker in its process, analytics worker
 *      in this one), and C' the same with the
 *      push subscriptions removed (the click function alone: nothing downstream runs). D, a diagnostic, is a
 *      bare Functions Framework function that awaits one publish (the click function's publisher, to a topic
 *      nobody subscribes to) and then redirects. A, D, B and C' run in alternating rounds (--rounds), pooled, in that order (see `alone`).
 *   1b. Clicks at a fixed rate, open loop (lib/fixed-rate.ts): B, D and C' at --fixed-rate % of B's closed-loop
 *      throughput, each request timed from its scheduled send time: the latency at a load an autoscaled instance runs at,
 *      and the stalls a closed loop hides (its connections stop sending while they wait). --fixed-rate-rounds rounds, pooled.
 *   2. Postbacks, closed loop: GET /postback with a unique txn_id and a valid click id per request (set per
 *      request by autocannon's setupRequest in the load worker), alone (P') and with the workers (P), against
 *      B at the same concurrency.
 *   3. End to end, open loop: clicks and postbacks at a fixed rate to the hit server; a sample of them is
 *      followed until it is visible through the API (click document, its own report row, conversion
 *      document), and the delivered totals are sampled over time. Baseline: the same measurement for a
 *      trickle of events on a quiet stack. With --rates (e.g. 100,200,300,500) the open loop runs at each
 *      rate in turn, each on a campaign and link of its own, the workers finishing the rate before first,
 *      and one table sums them up (achieved rate, delivery rate while sending, p50/p99 of the three paths,
 *      the CPU of each side), naming the highest rate that met p99 < 2 s on all three paths: the knee. The
 *      detailed output is printed for the --rate run (or the highest rate when --rate is not among them).
 *      Drain, the back half alone (--drain N, 0 to skip): with the workers' relays stopped (the subscriptions
 *      exist, so the emulator keeps what is published), N clicks and one postback per --clicks-per-postback
 *      clicks are published straight to the tracking topic from this process (publishTrackingEvent, the
 *      click and postback functions' publisher and event shapes, on a campaign of their own); then the
 *      relays start and the totals in Firestore (stats counters) and the report are sampled every second
 *      until all is in. The hit server and the load generator are idle meanwhile: this is the capacity of
 *      the workers, their relays and the emulators alone, which in production scale apart from the hit
 *      functions. On a 2-core machine the front half (generator, hit server, publishing) and the back half
 *      share the cores in the open loop; the sweep and the drain show each side's figures.
 *
 * Between parts the workers' backlog is dropped (the push subscriptions are recreated) so that no part pays
 * for the one before. Diagnostics ("where the time goes"): an awaited publish alone from the hit server with
 * the click function's grouped publisher, with the client's timer batching at 1 ms and 5 ms windows, with
 * maxMessages 1 and with the client's default 10 ms window; the link
 * cache's hit and miss paths in the hit server; the emulator's push concurrency; DuckDB single-row against
 * batched inserts. Prints figures only; it never asserts timings.
 *
 *   npx tsx scripts/bench/tracking.ts [--connections 50] [--duration 8] [--rate 500] [--rates 100,200,300,500] [--e2e-seconds 30]
 *     [--drain 15000] [--no-pin] [--skip-e2e] …  (--help)
 */
import { createServer, type Server } from 'node:http';
import { cpus, loadavg, release, totalmem, type as osType } from 'node:os';
import { performance } from 'node:perf_hooks';
import { failureCode, parseFlags, runMain, UsageError } from './lib/cli';
import { browserUserAgent, closedLoop, closedLoopRatios, closedLoopTable, poolRounds, type ClosedLoopOptions, type ClosedLoopResult } from './lib/closed-loop';
import { cpuMeter, formatCpuList, usableCores } from './lib/cpu';
import { fixedRate, poolFixedRate, type FixedRateResult } from './lib/fixed-rate';
import { startHitServer, type HitServerProcess } from './lib/hit-process';
import { oneVcpuNodeOptions } from '../../shared/runtime-flags';
import type { TrackingEvent } from '../../shared/domain/events';
import type { Batching, ProbeMessage } from './lib/hit-protocol';
import { limitOf, pinRest, planLayout, stateWorkerGroup, whereTheyRun, type Layout } from './lib/layout';
import { autocannonVersion, percentile } from './lib/load';
import { delays, delaysBySendTime, openLoop, sortedOf, type DelayStats, type OpenLoopReply } from './lib/open-loop';
import { ms, percent, rate, ratio, table } from './lib/report';
import { abortOnSignals, startBenchStack, stopBenchStackAndReport, type BenchStack } from './lib/stack';
import { defaultRelayInFlight } from '../local/push-relay';

const usage = `usage: npx tsx scripts/bench/tracking.ts [options]
  --connections N         click load: concurrent keep-alive connections (default 50)
  --duration S            click load: measured seconds per scenario and round (default 5)
  --rounds N              click load: A, D, B and C' measured in N alternating rounds, pooled (default 3; C once, after them)
  --warmup S              unmeasured seconds of load before each closed-loop scenario (default 1; 0 to skip)
  --prime S               unmeasured seconds of clicks through the click function before parts 1 and 2, so the Pub/Sub emulator's
                          JVM has compiled its publish path, as production Pub/Sub always has (default 30; 0 to skip). Without it
                          the emulator used 27-29% of a core to take C''s publishes and C'/B read 0.65-0.76x; primed, 5-8% and 0.75-0.90x (session 8)
  --fixed-rate P          part 1b: B, D (unless --skip-diagnostics) and C' in an open loop at P% of B's closed-loop
                          throughput, the latency at a load an autoscaled instance runs at (default 50; 0 to skip)
  --fixed-rate-rounds N   part 1b: rounds of B, D and C' at the fixed rate, --duration s each, pooled (default 3)
  --postback-connections N  postback load: connections (default 20)
  --postback-duration S   postback load: measured seconds (default 8)
  --rate N                end to end: events per second sent, open loop (default 500)
  --rates N,N,…           end to end: a sweep, the open loop at each rate in turn (e.g. 100,200,300,500), each for --e2e-seconds
                          on a campaign of its own, the workers finishing the rate before first; one summary row per rate and the
                          knee (the highest rate with p99 < 2 s on all three paths); the detailed output is for --rate, or the
                          highest rate when --rate is not in the list (default: just --rate)
  --e2e-seconds S         end to end: seconds of sending (default 30; per rate)
  --e2e-warmup S          end to end: seconds of unmeasured load at the highest rate before the first one, on a campaign of its
                          own, which the workers finish before the first: the emulators' JVMs compile their hot paths under load, and a sweep
                          that started on cold emulators measured its first rate 10-30x slower; 500/s alone after 10 s of warm-up
                          still had its first 10 s slow (click -> report p99 3.7 s), after 30 s 1.9 s (default 30; 0 to skip)
  --clicks-per-postback N end to end: one postback after every N clicks (default 10; 0 for clicks only)
  --sample-clicks N       end to end: follow every Nth click to Firestore and the report (default 20)
  --sample-postbacks N    end to end: follow every Nth postback to its conversion in the conversion list (default 1: all; one list query serves them all)
  --poll-ms N             end to end: poll interval for a followed event while it is younger than 2 s (default 100)
  --poll-budget N         end to end: at most N polls per second for all followed events together (default 0: 10% of --rate, at least 20)
  --settle S              end to end: how long to keep following after the last event was sent (default 15)
  --drain N               drain, the back half alone: publish N clicks (and 1 postback per --clicks-per-postback clicks) straight
                          to the tracking topic with the workers' relays stopped, then start them and time how fast the workers
                          get the backlog into Firestore and the report; hit server and load generator idle (default 15000; 0 to skip)
  --drain-timeout S       drain: give up after S seconds, or after 30 s without progress (default 300)
  --drain-in-flight N     drain: messages each relay keeps in flight (default ${defaultRelayInFlight}, what the stack's relays keep in the open loop)
  --drain-visitors N      drain: the clicks come from N visitors in turn (same user agent, N addresses); 0: each click a visitor of
                          its own (default). 1 is a flood from one address on one link, whose repeat clicks all write one visitor document
  --pin, --no-pin         pin the servers under test (A, B, D, the click function's server and the hit server) to the
                          last core and this process and the emulators to the others, with taskset (also --pin 1, --pin 0;
                          default: on with 2 or more usable cores)
  --pin-e2e               with --pin, keep this process and the emulators off the hit server's core in part 3 too (default:
                          part 3 lets them use every core, because the workers need more than the rest cores while the hit
                          server needs a fraction of its own at --rate)
  --skip-clicks, --skip-postbacks, --skip-e2e, --skip-diagnostics   leave a part out (--skip-e2e leaves out the open loop of
                          part 3; the drain runs unless --drain 0)`;

const intSpec = {
  connections: { default: 50, min: 1, max: 1000 },
  duration: { default: 5, min: 1, max: 600 },
  rounds: { default: 3, min: 1, max: 20 },
  warmup: { default: 1, min: 0, max: 600 },
  prime: { default: 30, min: 0, max: 600 },
  'fixed-rate': { default: 50, min: 0, max: 100 },
  'fixed-rate-rounds': { default: 3, min: 1, max: 20 },
  'postback-connections': { default: 20, min: 1, max: 1000 },
  'postback-duration': { default: 8, min: 1, max: 600 },
  rate: { default: 500, min: 1, max: 20_000 },
  'e2e-seconds': { default: 30, min: 1, max: 3600 },
  'e2e-warmup': { default: 30, min: 0, max: 600 },
  'clicks-per-postback': { default: 10, min: 0, max: 1000 },
  'sample-clicks': { default: 20, min: 1, max: 100_000 },
  'sample-postbacks': { default: 1, min: 1, max: 100_000 },
  'poll-ms': { default: 100, min: 10, max: 10_000 },
  'poll-budget': { default: 0, min: 0, max: 100_000 },
  settle: { default: 15, min: 1, max: 600 },
  drain: { default: 15_000, min: 0, max: 1_000_000 },
  'drain-timeout': { default: 300, min: 10, max: 3600 },
  'drain-in-flight': { default: defaultRelayInFlight, min: 1, max: 10_000 },
  'drain-visitors': { default: 0, min: 0, max: 1_000_000 },
} as const;
const boolFlags = ['skip-clicks', 'skip-postbacks', 'skip-e2e', 'skip-diagnostics'] as const;
type Flags = Record<keyof typeof intSpec, number> & Record<(typeof boolFlags)[number] | 'pin' | 'pin-e2e', boolean> & { rates: number[] };

/**
 * --rates takes a list, which parseFlags (integers, booleans, switches) does not: it is taken out of argv
 * first. A bad list is reported only after parseFlags has had its chance to answer --help.
 */
function takeRates(argv: string[]): { rest: string[]; rates: number[]; error?: string } {
  const rest: string[] = [];
  let rates: number[] = [];
  let error: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const m = /^--rates(?:=(.*))?$/.exec(arg);
    if (!m) {
      rest.push(arg);
      continue;
    }
    const value = m[1] ?? argv[++i] ?? '';
    const parts = value.split(',').map((v) => v.trim());
    if (parts.some((v) => !/^\d+$/.test(v) || Number(v) < intSpec.rate.min || Number(v) > intSpec.rate.max)) {
      error = `--rates must be a comma-separated list of integers from ${intSpec.rate.min} to ${intSpec.rate.max}, e.g. 100,200,300,500`;
    } else rates = parts.map(Number);
  }
  return { rest, rates, error };
}

const parse = (argv: string[]): Flags => {
  const { rest, rates, error } = takeRates(argv);
  const flags = parseFlags(rest, usage, intSpec, boolFlags, { pin: usableCores().length >= 2, 'pin-e2e': false });
  if (error) throw new UsageError(error);
  return { ...flags, rates: rates.length ? rates : [flags.rate] };
};

const progress = (msg: string) => process.stderr.write(`${msg}\n`);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
const shopUrl = 'https://shop.example.com/';

function environment(): string[] {
  const cpu = cpus();
  return [
    `node ${process.version} on ${osType()} ${release()} (${process.arch}), ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
    `closed-loop load: autocannon ${autocannonVersion} in a worker thread, keep-alive, pipelining 1; open-loop load: node:http keep-alive in a worker thread`,
  ];
}

/** The click function publishes through the adapter's grouped publisher (functions/adapters/pubsub.ts). */
const clickPublisher = 'grouped' as const;
const describeBatching = (b: Batching | 'grouped' | undefined) =>
  b === 'grouped'
    ? 'grouped (two requests in flight; what arrives meanwhile goes in the next)'
    : b
      ? `timer: maxMessages ${b.maxMessages ?? 'default'}, maxMilliseconds ${b.maxMilliseconds ?? 'default'}`
      : 'client defaults (maxMessages 100, maxMilliseconds 10)';

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

/** What the CPU columns mean, and where the processes ran. */
function cpuNotes(layout: Layout): string[] {
  const server = layout.serverCores ? `alone on core ${formatCpuList(layout.serverCores)}` : 'not pinned';
  const rest = layout.restCores ? `, on core ${formatCpuList(layout.restCores)}` : '';
  return [
    `  CPU columns: % of one core used while measured by the hit server (${server}), the bench process (load generator, API, analytics`,
    `  worker and its relay), the state worker process (state writer and its relay), the two emulator JVMs${rest}, and everything else`,
    '  on the machine ("others": other processes, the kernel). "limited by" names',
    '  the cores that were (nearly, >= 90%) busy, and by whom; "waiting": none was, the connections waited on answers (e.g. the',
    '  emulators\' latency). A result limited by anything but the server core understates the function under test.',
  ];
}

interface Counts {
  statsClicks: number;
  statsConversions: number;
  reportClicks: number;
  reportConversions: number;
}

/** The end-to-end totals at `t` seconds, and the CPU each side used since the point before (% of one core). */
interface TimelinePoint {
  t: number;
  c: Counts;
  cpu: Record<string, number>;
}

/**
 * Besides each process's CPU, part 3 samples how busy this process's main thread was (its event loop
 * utilisation, %): the API, the analytics worker and its relay share that one JavaScript thread here, so near
 * 100% it is the limit even with a core to spare. The state worker's thread is its own process's: its CPU
 * column near 100% says the same of it.
 */
const loopKey = 'bench loop';

/** One open-loop run of part 3, at one rate, on a campaign of its own. */
interface E2eRun {
  rate: number;
  campaignId: string;
  load: OpenLoopReply;
  before: Counts;
  after: Counts;
  timeline: TimelinePoint[];
  answered: { clicks: number; postbacks: number };
  pollBudget: number;
}

/** What reached each destination since `before`: Firestore clicks and conversions (stats counters), report clicks and conversions. */
const deliveredSince = (before: Counts, c: Counts) => ({
  fc: c.statsClicks - before.statsClicks,
  rc: c.reportClicks - before.reportClicks,
  fv: c.statsConversions - before.statsConversions,
  rv: c.reportConversions - before.reportConversions,
});

/** The CPU each side used over the points (% of one core): each point's share since the one before, weighted by its length. */
function cpuOver(points: readonly TimelinePoint[], keys: readonly string[]): Record<string, number> {
  const last = points[points.length - 1];
  if (!last) return {};
  return Object.fromEntries(keys.map((g) => [g, points.reduce((sum, p, i) => sum + (p.cpu[g] ?? Number.NaN) * (p.t - (i ? points[i - 1]!.t : 0)), 0) / last.t]));
}

/** The drain: a backlog published with the relays stopped, then drained; totals sampled every second from the relays' start. */
interface DrainResult {
  clicks: number;
  postbacks: number;
  publishSecs: number;
  /** The campaign's totals before publishing, and after publishing but before the relays started (nothing should have moved). */
  before: Counts;
  beforeRelays: Counts;
  points: TimelinePoint[];
  stopped: 'done' | 'stalled' | 'timeout';
}

/** Delivery while the generator was sending, from the totals sampled every 2 s, and the CPU over the same seconds. */
function whileSending(run: E2eRun, cpuKeys: readonly string[]) {
  const sendSecs = (run.load.lastSend - run.load.t0) / 1000;
  const during = run.timeline.filter((p) => p.t <= sendSecs + 0.5);
  const last = during[during.length - 1];
  if (!last) return undefined;
  const x = deliveredSince(run.before, last.c);
  return { t: last.t, firestorePerSec: x.fc / last.t, reportPerSec: x.rc / last.t, sentClicksPerSec: run.answered.clicks / sendSecs, cpu: cpuOver(during, [...cpuKeys, loopKey]) };
}

/** A delay for the tables: "not seen" for an event never seen (an infinite delay). */
const fmtDelay = (v: number) => (v === Number.POSITIVE_INFINITY ? 'not seen' : ms(v));

/** The three followed paths of part 3. */
function pathDelays(samples: OpenLoopReply['samples']) {
  return {
    firestore: delays(samples, 'click', 'firestoreAt'),
    report: delays(samples, 'click', 'reportAt'),
    conversion: delays(samples, 'postback', 'conversionAt'),
  };
}

/** p99 < 2 s on every path that had followed events (a path without any, e.g. postbacks with --clicks-per-postback 0, does not count). */
const metGoal = (d: ReturnType<typeof pathDelays>) => Object.values(d).some((s) => s.n > 0) && Object.values(d).every((s) => s.n === 0 || s.p99 < 2000);

async function main(flags: Flags): Promise<number> {
  const signal = abortOnSignals(progress);
  const started = Date.now();
  const startLoad = loadavg()[0]!;
  let stack: BenchStack | undefined;
  let hits: HitServerProcess | undefined;
  let baselines: HitServerProcess | undefined;
  let bareFramework: HitServerProcess | undefined;
  let clickServer: HitServerProcess | undefined;
  let stateWorker: HitServerProcess | undefined;
  const servers: Server[] = [];
  let failed = false;
  let quiesce: (() => Promise<void>) | undefined;
  const out: string[] = [];
  try {
    progress('Starting the Pub/Sub and Firestore emulators on free ports, then the stack…');
    stack = await startBenchStack({ signal });
    const st = stack;
    const base = st.baseUrl;
    // Pinned before anything is measured: this process (its load-generator threads inherit the mask) and the
    // emulators on the rest cores; the hit server, started below, gets the last core to itself.
    const layout = planLayout(flags.pin);
    const emulators = st.emulatorProcesses();
    const restPids = [process.pid, ...emulators.flatMap((e) => e.pids)];
    await pinRest(layout, restPids);
    // Part 3 measures the whole pipeline, whose workers (here in this process) have instances of their own in
    // production: kept to the rest cores they would be starved while the hit server idles on its core.
    const shareInE2e = layout.restCores !== undefined && !flags['pin-e2e'];
    // Each campaign is the run's own, so the range only has to hold every event: the drain's clicks are minted a
    // minute in the past, which was yesterday for a run started just after midnight UTC (it counted none of them).
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);

    // Read only now: these modules read ABP_DATA_DIR and the emulator hosts on first use.
    const { mintClickId } = await import('../../shared/domain/click-id');
    const { secrets } = await import('../../functions/adapters/local-secrets');
    const { pubsub } = await import('../../functions/adapters/pubsub');

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
    // Also creates the local secrets (signing and hash keys) in ABP_DATA_DIR before the hit server reads them.
    const signingKey = secrets().clickSigningKey;
    const mintPool = (linkId: string, n: number) => Array.from({ length: n }, () => mintClickId(signingKey, linkId, Date.now() - 60_000));

    const counts = (key: keyof typeof campaigns) => countsOf(campaigns[key]);
    const countsOf = async (campaignId: string): Promise<Counts> => {
      const q = `from=${yesterday}&to=${tomorrow}&campaignId=${campaignId}`;
      const [stats, report] = await Promise.all([api('GET', `/v1/orgs/${orgId}/stats?${q}`), api('GET', `/v1/orgs/${orgId}/reports?${q}`)]);
      const s = stats.totals as { clicks: number; conversions: number };
      const r = report.totals as { clicks: number; conversions: number };
      return { statsClicks: s.clicks, statsConversions: s.conversions, reportClicks: r.clicks, reportConversions: r.conversions };
    };

    // The analytics worker runs in this process (the stack's), fed by a relay here: DuckDB admits one writing
    // process and the API's reports read it. The state worker (Firestore only) runs in a process of its own
    // (started below, with its relay), as it has instances of its own in production: here it would share this
    // process's one JavaScript thread with the API, the analytics worker and both relays, and that thread, not
    // the workers, would be what part 3 measures. Between parts the backlog is dropped (the push subscriptions
    // are recreated, as `npm start` creates them) so that no part pays for the one before; for the "alone"
    // scenarios the push subscriptions are removed, so nothing runs downstream. Each relay is stopped before
    // its subscription goes; the stack's first ones (both in this process) end on their own when their
    // subscriptions are deleted, which the first workersFresh below does before anything is measured.
    const { provisionPubSub } = await import('../local/pubsub-setup');
    const { subscriptions } = await import('../../shared/names');
    let relays: { teardown(): Promise<void> } | undefined;
    const workersOff = async () => {
      // Without the abort signal: this also runs in the finally block after Ctrl-C, to stop the relay there.
      await stateWorker?.call('stopRelay', {});
      await relays?.teardown();
      relays = undefined;
      for (const name of [subscriptions.stateWriter, subscriptions.analyticsWriter]) await pubsub().subscription(name).delete().catch(() => undefined);
      await sleep(1500); // let pushes already under way finish
    };
    quiesce = workersOff; // before stopping: no push should still be running when the clients close
    const workersFresh = async () => {
      await stateWorker?.call('stopRelay', {}, signal);
      await relays?.teardown();
      relays = await provisionPubSub(base, { relayWorkers: ['analyticsWriter'] });
      await stateWorker!.call('startRelay', { inFlight: defaultRelayInFlight }, signal);
      await sleep(1500);
    };

    /**
     * Between the runs of part 3: the workers finish what the run before sent (its campaign's clicks and
     * conversions all in Firestore and the report), relays and subscriptions untouched, so the next run starts
     * on a warm pipeline as a steady stream would. Recreating the subscriptions and restarting the relays
     * instead (workersFresh) made the first 5 s of the next run 3-6x slower (p99 4-8 s, then ~1 s), which is
     * the harness's doing, not the pipeline's. Only a backlog that is not in within a minute is dropped.
     */
    const drainedOrDropped = async (campaignId: string, sent: OpenLoopReply) => {
      const clicks = sent.clickStatus['302'] ?? 0;
      const postbacks = sent.postbackStatus['200'] ?? 0;
      progress(`  waiting for the workers to finish the run before (${clicks} clicks, ${postbacks} postbacks)…`);
      const deadline = performance.now() + 60_000;
      for (;;) {
        const c = await countsOf(campaignId);
        if (c.statsClicks >= clicks && c.reportClicks >= clicks && c.statsConversions >= postbacks && c.reportConversions >= postbacks) break;
        if (performance.now() > deadline) {
          progress('  not in after a minute: dropping the workers\' backlog…');
          await workersFresh();
          await sleep(5000); // what the emulators still do for the dropped backlog
          return;
        }
        await sleep(500);
      }
      await sleep(1000); // the relays' last acks
    };

    // D publishes to a topic of its own, without subscriptions (nothing downstream runs), with the click
    // function's batching, the same event the click function publishes.
    const batching = clickPublisher;
    const probeTopicName = 'bench-publish-probe';
    await pubsub().createTopic(probeTopicName).catch((err: { code?: number }) => {
      if (err.code !== 6) throw err;
    });
    const sampleEvent = JSON.stringify({
      type: 'click', eventId: mintPool(links.clicks, 1)[0], orgId, linkId: links.clicks, campaignId: campaigns.clicks, affiliateId, occurredAt: new Date().toISOString(),
      sub1: 'bench', sub2: null, sub3: null, sub4: null, sub5: null, visitorHash: 'x'.repeat(22), ipHash: 'y'.repeat(22), ipPrefix: '198.18.0.0/24', country: null,
      device: 'desktop', os: 'Windows', browser: 'Chrome', referrer: null, isBot: false, botReason: null,
    });
    const probeMessage = (b: Batching | 'grouped' | undefined): ProbeMessage => ({ topic: probeTopicName, batching: b, data: sampleEvent, attributes: { type: 'click', orgId, eventId: 'probe' } });

    // The servers under test, in processes of their own (as production runs the hit functions: apart from
    // the workers), on the last core when pinned: A a bare node:http 302 and D a bare Functions Framework
    // function that awaits one publish, in one; B the bare Functions Framework redirect alone in another; the
    // click function alone in a third; and the click, postback and pixel functions behind the gateway. Every
    // function has instances of its own: a server is not measured in a heap that another one's modules or load
    // have shaped (idle ones beside it cost nothing).
    progress(`Starting the servers under test${layout.serverCores ? ` on core ${formatCpuList(layout.serverCores)}` : ''}…`);
    hits = await startHitServer({ cores: layout.serverCores, signal });
    baselines = await startHitServer({ cores: layout.serverCores, signal, name: 'baselines server' });
    bareFramework = await startHitServer({ cores: layout.serverCores, signal, name: 'bare Functions Framework server' });
    clickServer = await startHitServer({ cores: layout.serverCores, signal, name: 'click function server' });
    const urls = {
      ...(await baselines.call('serve', { bareRedirect: shopUrl, publishRedirect: { to: shopUrl, message: probeMessage(batching) } }, signal)),
      ...(await bareFramework.call('serve', { ffRedirect: shopUrl }, signal)),
      ...(await clickServer.call('serve', { clickFunction: true }, signal)),
      ...(await hits.call('serve', { hitFunctions: true }, signal)),
    };
    const hitUrl = urls.hitFunctions!;
    // The state worker and its relay, in a process of their own (see workersFresh) on the rest cores, where
    // this process runs: it is part of the pipeline, not the function under test. Its relay starts with
    // workersFresh. Profiling flags (ABP_BENCH_HIT_NODE_ARGS) are for the hit server only.
    progress('Starting the state worker in a process of its own…');
    stateWorker = await startHitServer({ cores: layout.restCores, signal, name: 'state worker', nodeArgs: [] });
    await stateWorker.call('serve', { stateWriter: true }, signal);
    restPids.push(stateWorker.pid); // follows this process when part 3 lets it use every core
    const processes = [
      { label: 'hit server (click/postback/pixel functions)', pids: [hits.pid] },
      { label: 'click function server (C\', C)', pids: [clickServer.pid] },
      { label: 'bare Functions Framework server (B)', pids: [bareFramework.pid] },
      { label: 'baselines server (A, D)', pids: [baselines.pid] },
      { label: 'bench process (driver, load-generator threads, stack: API, analytics worker and its relay)', pids: [process.pid] },
      { label: 'state worker (state writer function and its relay)', pids: [stateWorker.pid] },
      ...emulators.map((e) => ({ label: `${e.name === 'pubsub' ? 'Pub/Sub' : 'Firestore'} emulator (java)`, pids: e.java })),
    ];
    // CPU used by each side while a scenario is measured: which one was the limit.
    const cpuGroups = { server: [hits.pid, clickServer.pid, bareFramework.pid, baselines.pid], bench: [process.pid], [stateWorkerGroup]: [stateWorker.pid], emulators: emulators.flatMap((e) => e.java) };
    // From here on the state worker runs only there: the stack's relays (both in this process) are replaced.
    // Off first, with its pause: a streaming pull ends only when it finds its subscription gone, and one that
    // reconnects while the subscription is deleted and at once recreated finds the new one and keeps going
    // (measured: the stack's state-writer relay then ran on, in this process, beside the child's).
    await workersOff();
    await workersFresh();

    // A sanity click and postback: the whole path works, and the click is a human's, not a bot's.
    {
      const res = await fetch(`${hitUrl}/c/${links.clicks}?sub1=sanity`, { redirect: 'manual', headers: { 'user-agent': browserUserAgent, 'x-forwarded-for': '198.19.255.254' } });
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
      const pb = await fetch(`${hitUrl}/postback?token=${postbackToken}&click_id=${encodeURIComponent(mintPool(links.postbacks, 1)[0]!)}&txn_id=sanity-1&amount=10.00`);
      const body = (await pb.json()) as { status?: string };
      if (pb.status !== 200 || body.status !== 'accepted') throw new Error(`The sanity postback answered ${pb.status} ${JSON.stringify(body)}`);
    }

    const configLines = [
      `configuration: --connections ${flags.connections} --duration ${flags.duration} --rounds ${flags.rounds} --warmup ${flags.warmup} --prime ${flags.prime} --fixed-rate ${flags['fixed-rate']} --fixed-rate-rounds ${flags['fixed-rate-rounds']} --postback-connections ${flags['postback-connections']} --postback-duration ${flags['postback-duration']}`,
      `               --rate ${flags.rate}${flags.rates.length > 1 || flags.rates[0] !== flags.rate ? ` --rates ${flags.rates.join(',')}` : ''} --e2e-seconds ${flags['e2e-seconds']} --e2e-warmup ${flags['e2e-warmup']} --clicks-per-postback ${flags['clicks-per-postback']} --sample-clicks ${flags['sample-clicks']} --sample-postbacks ${flags['sample-postbacks']}`,
      `               --poll-ms ${flags['poll-ms']} --poll-budget ${flags['poll-budget'] || `${Math.max(20, Math.round(flags.rate / 10))} (10% of rate)`} --settle ${flags.settle} --drain ${flags.drain} --drain-timeout ${flags['drain-timeout']} --drain-in-flight ${flags['drain-in-flight']} --drain-visitors ${flags['drain-visitors']} ${flags.pin ? '--pin' : '--no-pin'}${flags['pin-e2e'] ? ' --pin-e2e' : ''}${boolFlags.filter((b) => flags[b]).map((b) => ` --${b}`).join('')}`,
      `click function publisher (functions/adapters/pubsub.ts): ${describeBatching(batching)}; LINK_CACHE_TTL_SECONDS ${process.env.LINK_CACHE_TTL_SECONDS ?? '10 (default)'}`,
      `node flags of the servers under test (the state worker: the first ones only): ${[...oneVcpuNodeOptions, ...(process.env.ABP_BENCH_HIT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)].join(' ')} (shared/runtime-flags.ts: what infra/ sets as NODE_OPTIONS on one-vCPU functions)`,
    ];
    out.push(
      '',
      'Tracking hot path on the local stack',
      ...environment(),
      ...configLines,
      `process layout, ${layout.why}: ${whereTheyRun(processes)}${shareInE2e ? `; in part 3 the bench process, the state worker and the emulators may use every core (--pin-e2e keeps them apart)` : ''}`,
    );

    // ---- Diagnostics first, on a quiet stack: the awaited publish alone, and the link cache.
    const diag: string[] = [];
    if (!flags['skip-diagnostics']) {
      progress('Diagnostics: an awaited publish alone (four batching settings), the link cache…');
      const settings: [string, Batching | 'grouped' | undefined][] = [
        ["click function's: grouped", batching],
        ['timer: maxMessages 100, 1 ms window', { maxMessages: 100, maxMilliseconds: 1 }],
        ['timer: maxMessages 100, 5 ms window', { maxMessages: 100, maxMilliseconds: 5 }],
        ['maxMessages 1 (no batching)', { maxMessages: 1 }],
        ['client default (10 ms window)', undefined],
      ];
      const rows: string[][] = [];
      for (const [name, b] of settings) {
        const r = await hits.call('probePublish', { message: probeMessage(b), warm: 20, sequential: 150, concurrency: flags.connections, seconds: 2 }, signal);
        const s1 = sortedOf(r.sequential);
        const s2 = sortedOf(r.concurrent);
        rows.push([name, ms(percentile(s1, 50)), ms(percentile(s1, 99)), rate(r.concurrent.length / r.concurrentSeconds), ms(percentile(s2, 50)), ms(percentile(s2, 99))]);
      }
      diag.push(
        '',
        `Where the time goes (a): one awaited publishMessage to the emulator from the hit server (where the click function publishes), 150 one at a time,`,
        `then ${flags.connections} concurrent loops for 2 s`,
        table(['batching', 'alone p50 ms', 'alone p99 ms', `x${flags.connections} publishes/s`, `x${flags.connections} p50 ms`, `x${flags.connections} p99 ms`], rows),
      );

      // The link cache, in the hit server: a hit is a Map lookup and an already settled promise; a miss reads three documents.
      const freshLinkIds: string[] = [];
      for (let i = 0; i < 5; i++) freshLinkIds.push(await link(campaigns.clicks));
      const cache = await hits.call('probeLinkCache', { linkId: links.clicks, hits: 20_000, freshLinkIds }, signal);
      const missSorted = sortedOf(cache.missMilliseconds);
      diag.push(
        '',
        `Where the time goes (b): the link cache (functions/services/link-resolver.ts), in the hit server`,
        `  hit:  ${cache.hitMicroseconds.toFixed(2)} µs per awaited resolveLink (20000 in a row)`,
        `  miss: ${ms(percentile(missSorted, 50))} ms median, ${ms(missSorted[missSorted.length - 1]!)} ms max over ${missSorted.length} fresh links (link index + getAll(campaign, org)); a warm instance pays it once per link per TTL`,
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
      const pushPublisher = pubsub().topic(pushTopic);
      await Promise.all(Array.from({ length: pushN }, () => pushPublisher.publishMessage({ data: Buffer.from(sampleEvent) })));
      while (delivered < pushN && performance.now() - tp < 10_000) await sleep(20);
      const pushSecs = (performance.now() - tp) / 1000;
      await pubsub().subscription(pushSub).delete().catch(() => undefined);
      await closeServer(sink);

      // The analytics store (DuckDB): one row per insert, as the analytics worker writes, against 100 rows per insert.
      const { analyticsStore } = await import('../../functions/adapters/analytics');
      const { clickRow } = await import('../../functions/workers/analytics-writer');
      const probeEvent = JSON.parse(sampleEvent) as Parameters<typeof clickRow>[0];
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

    // A measured closed-loop run, with the CPU each side used meanwhile.
    const measure = async (label: string, o: ClosedLoopOptions) => {
      const meter = cpuMeter(cpuGroups);
      const r = await closedLoop(label, o, signal);
      const cpu = meter.read();
      return { ...r, cpu: cpu.groups, limit: limitOf(layout, cpu) };
    };
    /** Unmeasured load before a scenario (--warmup); the responses it got with the expected status. */
    const warmUp = async (label: string, o: ClosedLoopOptions): Promise<number> => {
      if (flags.warmup <= 0) return 0;
      progress(`  warm-up  ${label}${o.connections !== flags.connections ? ` @${o.connections}` : ''} (${flags.warmup} s)`);
      return (await closedLoop(label, { ...o, seconds: flags.warmup }, signal)).ok;
    };

    // The emulators' JVMs interpret, then compile, their hot paths: a cold Pub/Sub emulator takes each publish
    // several times slower than a warm one, and the click function waits for every publish. Production's Pub/Sub is
    // never cold, so the click and postback figures are taken on a warm emulator (--prime).
    if (flags.prime > 0 && !(flags['skip-clicks'] && flags['skip-postbacks'])) {
      await workersOff();
      progress(`  priming the Pub/Sub emulator: clicks through the click function for ${flags.prime} s, not measured…`);
      await closedLoop('prime', { url: urls.clickFunction!, path: `/c/${links.clicks}?sub1=prime`, connections: flags.connections, seconds: flags.prime, expect: 302 }, signal);
    }

    // ---- 1. Clicks, closed loop.
    const clickRows: ClosedLoopResult[] = [];
    const fixedRows: FixedRateResult[] = [];
    let duringC: { before: Counts; after: Counts; seconds: number; answered: number } | undefined;
    if (!flags['skip-clicks']) {
      const clickPath = `/c/${links.clicks}?sub1=bench`;
      const clickLoad = (url: string): ClosedLoopOptions => ({ url, path: clickPath, connections: flags.connections, seconds: flags.duration, expect: 302 });
      // A, D, B and C' in alternating rounds, pooled; C once, after them (it needs the workers on).
      const alone = [
        { label: 'A  bare node:http 302', url: urls.bareRedirect! },
        ...(flags['skip-diagnostics'] ? [] : [{ label: 'D  FF + awaited publish (diagnostic)', url: urls.publishRedirect! }]),
        { label: 'B  bare Functions Framework redirect', url: urls.ffRedirect! },
        { label: "C' click function alone (no push subscriptions)", url: urls.clickFunction! },
      ];
      // D and C' both load the Pub/Sub emulator, and measured back to back the second paid for the first: its JVM
      // was still digesting D's publishes (C'/B 0.69x and 0.75x right after D, 0.82x in the same kind of run with
      // B, which never publishes, measured in between; session 9). Each publisher follows a scenario that does not publish.
      const rounds: ClosedLoopResult[][] = alone.map(() => []);
      await workersOff();
      for (let round = 0; round < flags.rounds; round++) {
        for (const [i, s] of alone.entries()) {
          if (round === 0) await warmUp(s.label, clickLoad(s.url));
          progress(`  measure  ${s.label} (${flags.duration} s, round ${round + 1}/${flags.rounds})`);
          rounds[i]!.push(await measure(s.label, clickLoad(s.url)));
        }
      }
      clickRows.push(...rounds.map(poolRounds));
      // 1b. B, D and C' at a fixed share of B's closed-loop throughput: the load a production instance runs at.
      const bRate = clickRows.find((r) => r.label.startsWith('B '))?.okPerSec ?? 0;
      if (flags['fixed-rate'] > 0 && bRate > 0) {
        const fixed = Math.round((bRate * flags['fixed-rate']) / 100);
        // D too when it runs: it shows what the awaited publish alone does to the tail.
        const servers = ['B ', 'D ', "C' "].flatMap((k) => alone.filter((x) => x.label.startsWith(k)));
        const fixedRounds: FixedRateResult[][] = servers.map(() => []);
        for (let round = 0; round < flags['fixed-rate-rounds']; round++) {
          for (const [i, s] of servers.entries()) {
            // A pause first: the servers measured before share the core, and a collection they run once their load
            // stops would land in this measurement.
            await sleep(3000);
            await fixedRate(s.label, { url: s.url, path: clickPath, rate: fixed, seconds: 1 }, signal); // warm-up
            progress(`  measure  ${s.label} at ${fixed}/s, open loop (${flags.duration} s, round ${round + 1}/${flags['fixed-rate-rounds']})`);
            fixedRounds[i]!.push(await fixedRate(s.label, { url: s.url, path: clickPath, rate: fixed, seconds: flags.duration }, signal));
          }
        }
        fixedRows.push(...fixedRounds.map(poolFixedRate));
      }
      const cLabel = 'C  click function, workers running (see below)';
      await workersFresh();
      const before = await counts('clicks');
      const t = performance.now();
      const answered = await warmUp(cLabel, clickLoad(urls.clickFunction!));
      progress(`  measure  ${cLabel} (${flags.duration} s)`);
      const r = await measure(cLabel, clickLoad(urls.clickFunction!));
      clickRows.push(r);
      duringC = { before, after: await counts('clicks'), seconds: (performance.now() - t) / 1000, answered: answered + r.ok };
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
        { key: 'B', label: 'B  bare Functions Framework redirect', url: urls.ffRedirect!, expect: 302, extra: {} },
        { key: "P'", label: "P' postback function alone (no push subscriptions)", url: hitUrl, expect: 200, extra: { clickIds: pool, txnPrefix: `pb1-${runId}-` } },
        { key: 'P', label: 'P  postback function, workers running (see below)', url: hitUrl, expect: 200, extra: { clickIds: pool, txnPrefix: `pb2-${runId}-` } },
      ];
      for (const s of scenarios) {
        if (s.key === "P'") await workersOff();
        if (s.key === 'P') await workersFresh();
        const load: ClosedLoopOptions = { url: s.url, path: pbPath, connections: pc, seconds: flags['postback-duration'], expect: s.expect, ...s.extra };
        await warmUp(s.label, load);
        progress(`  measure  ${s.label} @${pc} (${flags['postback-duration']} s)`);
        postbackRows.push(await measure(s.label, load));
      }
      await workersFresh();
    }

    // ---- 3. End to end, open loop: at each rate of the sweep in turn (by default just --rate).
    // The bench process, the state worker and the emulators may use every core from here on (unless --pin-e2e): the workers
    // have instances of their own in production, and in the drain the hit server is idle.
    if (shareInE2e && (!flags['skip-e2e'] || flags.drain > 0)) await pinRest(layout, restPids, { withServerCore: true });
    const e2eLayout = whereTheyRun(processes);
    const cpuKeys = [...Object.keys(cpuGroups), 'others'];
    const runs: E2eRun[] = [];
    let idle: OpenLoopReply | undefined;
    if (!flags['skip-e2e']) {
      const common = (linkId: string, campaignId: string) => ({
        hitUrl, apiUrl: base, orgId, token, linkId, campaignId, postbackToken, clickIds: mintPool(linkId, 5000),
        pollMs: flags['poll-ms'], reportPollMs: Math.max(flags['poll-ms'], 250), settleSeconds: flags.settle,
      });
      progress('  end to end, idle baseline: 12 events at 4/s, every one followed…');
      idle = await openLoop({ ...common(links.e2e, campaigns.e2e), pollBudget: 50, rate: 4, seconds: 3, clicksPerPostback: 2, sampleClicks: 1, samplePostbacks: 1, tag: 'idle', ipStart: 70_000 }, signal);
      if (flags['e2e-warmup'] > 0) {
        const warmRate = Math.max(...flags.rates);
        progress(`  end to end, warm-up: ${warmRate} events/s for ${flags['e2e-warmup']} s, not measured…`);
        const warmCampaign = await campaign('Bench end to end warm-up');
        const warm = await openLoop(
          { ...common(await link(warmCampaign), warmCampaign), settleSeconds: 0, pollBudget: 1, rate: warmRate, seconds: flags['e2e-warmup'], clicksPerPostback: flags['clicks-per-postback'], sampleClicks: 1e9, samplePostbacks: 1e9, tag: 'warm', ipStart: 60_000 },
          signal,
        );
        await drainedOrDropped(warmCampaign, warm);
      }
      for (const [i, r] of flags.rates.entries()) {
        // Each rate on a campaign and link of its own, counted on its own; the workers finish the rate before first.
        if (i > 0) await drainedOrDropped(runs[i - 1]!.campaignId, runs[i - 1]!.load);
        const campaignId = await campaign(`Bench end to end ${r}/s #${i + 1}`);
        const linkId = await link(campaignId);
        const before = await countsOf(campaignId);
        progress(`  end to end${flags.rates.length > 1 ? ` (${i + 1}/${flags.rates.length})` : ''}: ${r} events/s for ${flags['e2e-seconds']} s, then up to ${flags.settle} s to see the followed ones…`);
        // Delivered totals over time, from this thread: two cheap queries every 2 s, and the CPU each side
        // used since the point before.
        const timeline: TimelinePoint[] = [];
        let sampling = true;
        const t0 = performance.now();
        let meter = cpuMeter(cpuGroups);
        let loop = performance.eventLoopUtilization();
        const sample = async () => {
          const c = await countsOf(campaignId);
          const cpu = { ...meter.read().groups, [loopKey]: performance.eventLoopUtilization(loop).utilization * 100 };
          meter = cpuMeter(cpuGroups);
          loop = performance.eventLoopUtilization();
          timeline.push({ t: (performance.now() - t0) / 1000, c, cpu });
        };
        const sampler = (async () => {
          while (sampling) {
            await sleep(2000);
            if (!sampling) break;
            await sample().catch(() => undefined);
          }
        })();
        const pollBudget = flags['poll-budget'] || Math.max(20, Math.round(r / 10));
        let load: OpenLoopReply;
        try {
          load = await openLoop(
            {
              ...common(linkId, campaignId), rate: r, seconds: flags['e2e-seconds'], clicksPerPostback: flags['clicks-per-postback'],
              sampleClicks: flags['sample-clicks'], samplePostbacks: flags['sample-postbacks'], tag: `e2e${i}`, ipStart: 80_000, pollBudget,
            },
            signal,
          );
        } finally {
          sampling = false;
          await sampler;
        }
        await sample();
        const after = timeline[timeline.length - 1]!.c;
        runs.push({ rate: r, campaignId, load, before, after, timeline, answered: { clicks: load.clickStatus['302'] ?? 0, postbacks: load.postbackStatus['200'] ?? 0 }, pollBudget });
      }
    }

    // ---- Drain, the back half alone: a backlog published while the relays are stopped, then drained.
    let drain: DrainResult | undefined;
    if (flags.drain > 0) {
      const { publishTrackingEvent } = await import('../../functions/adapters/pubsub');
      const { keyedHash, ipPrefix } = await import('../../shared/domain/visitor');
      const { deterministicId } = await import('../../shared/ids');
      progress('  drain: stopping the workers\' relays (and dropping their backlog)…');
      await workersOff();
      // The subscriptions as the stack creates them, but no relay yet: the emulator keeps what is published
      // until one pulls.
      const drainSetup = await provisionPubSub(base, { relays: 'later', relayInFlight: flags['drain-in-flight'], relayWorkers: ['analyticsWriter'] });
      relays = drainSetup;
      const campaignId = await campaign('Bench drain');
      const linkId = await link(campaignId);
      // The events the click and postback functions publish: N clicks (distinct visitors, or --drain-visitors in turn; click ids minted
      // with the local signing key 60 s in the past) and after every --clicks-per-postback clicks a postback
      // for the click just before it, with a unique txn_id.
      const n = flags.drain;
      const cpp = flags['clicks-per-postback'];
      const keys = secrets();
      const runId = Math.random().toString(36).slice(2, 8);
      const events: TrackingEvent[] = [];
      let postbacks = 0;
      for (let i = 0; i < n; i++) {
        const clickedAt = Date.now() - 60_000;
        const clickId = mintClickId(signingKey, linkId, clickedAt);
        const v = flags['drain-visitors'] > 0 ? i % flags['drain-visitors'] : i;
        const ip = `198.${18 + ((v >>> 16) & 1)}.${(v >>> 8) & 255}.${v & 255}`;
        events.push({
          type: 'click', eventId: clickId, orgId, linkId, campaignId, affiliateId, occurredAt: new Date(clickedAt).toISOString(),
          sub1: 'drain', sub2: null, sub3: null, sub4: null, sub5: null,
          visitorHash: keyedHash(keys.hashKey, 'visitor', ip, browserUserAgent), ipHash: keyedHash(keys.hashKey, 'ip', ip), ipPrefix: ipPrefix(ip),
          country: null, device: 'desktop', os: 'Windows', browser: 'Chrome', referrer: null, isBot: false, botReason: null, attributionWindowDays: 30,
        });
        if (cpp > 0 && (i + 1) % cpp === 0) {
          const txnId = `drain-${runId}-${postbacks++}`;
          events.push({
            type: 'postback', eventId: deterministicId('cnv', orgId, 'txn', txnId), orgId, clickId, txnId, event: 'conversion',
            amount: 1000, currency: 'USD', occurredAt: new Date().toISOString(), via: 'postback',
          });
        }
      }
      const before = await countsOf(campaignId);
      progress(`  drain: publishing ${n} clicks and ${postbacks} postbacks to the tracking topic, nobody pulling…`);
      const tp = performance.now();
      await Promise.all(events.map((e) => publishTrackingEvent(e)));
      const publishSecs = (performance.now() - tp) / 1000;
      await sleep(1000);
      const beforeRelays = await countsOf(campaignId);
      progress(`  drain: starting the relays; sampling the totals every second until all is in (at most ${flags['drain-timeout']} s)…`);
      const points: TimelinePoint[] = [];
      const t0 = performance.now();
      let meter = cpuMeter(cpuGroups);
      let loop = performance.eventLoopUtilization();
      drainSetup.startRelays();
      await stateWorker.call('startRelay', { inFlight: flags['drain-in-flight'] }, signal);
      let stopped: DrainResult['stopped'] = 'timeout';
      let lastChange = t0;
      let prev = beforeRelays;
      while (performance.now() - t0 < flags['drain-timeout'] * 1000) {
        signal.throwIfAborted();
        await sleep(1000);
        const c = await countsOf(campaignId);
        const cpu = { ...meter.read().groups, [loopKey]: performance.eventLoopUtilization(loop).utilization * 100 };
        meter = cpuMeter(cpuGroups);
        loop = performance.eventLoopUtilization();
        const now = performance.now();
        points.push({ t: (now - t0) / 1000, c, cpu });
        const x = deliveredSince(before, c);
        if (x.fc >= n && x.rc >= n && x.fv >= postbacks && x.rv >= postbacks) {
          stopped = 'done';
          break;
        }
        if (JSON.stringify(c) !== JSON.stringify(prev)) lastChange = now;
        prev = c;
        if (now - lastChange > 30_000) {
          stopped = 'stalled';
          break;
        }
      }
      await workersOff();
      drain = { clicks: n, postbacks, publishSecs, before, beforeRelays, points, stopped };
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
        `1. Clicks, closed loop: ${flags.connections} connections, ${flags.rounds} x ${flags.duration} s per scenario in alternating rounds, pooled (C: once, ${flags.duration} s), after ${flags.warmup} s warm-up (${flags.prime} s priming the emulator before); GET /c/{linkId}?sub1=bench, desktop Chrome`,
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
        goals(c, 'with the workers running'),
        '    ("workers running", in C and in P of part 2: the state worker and its relay in a process of their own, the analytics worker',
        '    and its relay in the bench process, beside the API)',
        goals(cAlone, 'the click function alone'),
      );
      if (d) {
        out.push(
          `  B -> D  the awaited publish (same batching, topic without subscribers): ${ms(b.p50)} -> ${ms(d.p50)} ms p50, req/s x${(d.okPerSec / b.okPerSec).toFixed(2)}`,
          `  D -> C' the rest of the click function (link cache, HMACs, UA parsing, cookie, macros): ${ms(d.p50)} -> ${ms(cAlone.p50)} ms p50, req/s x${(cAlone.okPerSec / d.okPerSec).toFixed(2)}`,
        );
      }
      out.push(
        `  C' -> C with the two push subscriptions in place (the emulator keeps and pushes every click twice; the state and analytics`,
        `          workers write to the emulators, the state worker from its own process, the analytics worker from the bench process):`,
      `          ${ms(cAlone.p50)} -> ${ms(c.p50)} ms p50, req/s x${(c.okPerSec / cAlone.okPerSec).toFixed(2)}`,
      );
      if (duringC) {
        const { before, after, seconds, answered } = duringC;
        out.push(
          `  while C ran (${seconds.toFixed(0)} s incl. warm-up, ${answered} clicks answered) the workers got ${after.statsClicks - before.statsClicks} into the Firestore counters (${rate((after.statsClicks - before.statsClicks) / seconds)}/s)`,
          `  and ${after.reportClicks - before.reportClicks} into the report (${rate((after.reportClicks - before.reportClicks) / seconds)}/s); the rest was dropped before part 2.`,
        );
      }
      const fb = fixedRows.find((r) => r.label.startsWith('B '));
      const fc = fixedRows.find((r) => r.label.startsWith("C' "));
      if (fb && fc) {
        out.push(
          '',
          `1b. Clicks at a fixed rate, open loop: ${fb.rate}/s (${flags['fixed-rate']}% of B's closed-loop throughput above), ${fb.rounds} round(s) of ${flags.duration} s each after 1 s, pooled;`,
          '   warm-up, each request sent at its scheduled time over keep-alive connections and timed from that time (a server that falls',
          '   behind is charged for the wait); a production instance is autoscaled to run well below saturation, where part 1 measures',
          table(
            ['scenario', 'rate/s', 'answered 302', 'errors', 'p50 ms', 'p90 ms', 'p99 ms', 'p99 by round', 'max ms', 'sender late p99 / max ms'],
            fixedRows.map((r) => [r.label, String(r.rate), `${r.ok}/${r.sent}`, String(r.errors), ms(r.p50), ms(r.p90), ms(r.p99), r.roundP99s.map(ms).join(' / '), ms(r.max), `${ms(r.lagP99)} / ${ms(r.lagMax)}`]),
          ),
          `   C'/B at ${fb.rate}/s: p50 ${ratio(fc.p50 / fb.p50)}, p99 ${ratio(fc.p99 / fb.p99)} (the goal, p99 < 20 ms, is set at 50 connections: part 1)`,
        );
      }
      out.push(...cpuNotes(layout));
    }
    const cpuExplained = clickRows.length > 0;
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
        '  that tells a retry from a first delivery); "workers running": the state worker in a process of its own, the analytics worker',
        '  in the bench process.',
        ...(cpuExplained ? ['  (CPU columns and "limited by": see part 1)'] : cpuNotes(layout)),
      );
    }
    // The detailed output: for the --rate run, or the highest rate of the sweep when --rate is not among them.
    const detailed = runs.find((r) => r.rate === flags.rate) ?? [...runs].sort((a, b) => b.rate - a.rate)[0];
    if (detailed && idle) {
      const { load, before, after, timeline, answered, rate: runRate, pollBudget: budget } = detailed;
      const sendSecs = (load.lastSend - load.t0) / 1000;
      const lag = sortedOf(load.sendLag);
      const clickLat = sortedOf(load.clickLatency);
      const pbLat = sortedOf(load.postbackLatency);
      const fmt = fmtDelay;
      const row = (label: string, s: DelayStats, idleS: DelayStats) => [
        label, `${s.seen}/${s.n}`, fmt(s.p50), fmt(s.p90), fmt(s.p99), fmt(s.max), ratio(s.p50 / idleS.p50), ratio(s.p99 / idleS.max), s.p99 < 2000 ? 'met' : 'missed',
      ];
      const idleRow = (label: string, s: DelayStats) => [label, `${s.seen}/${s.n}`, fmt(s.p50), fmt(s.max)];
      const pollSecs = (load.pollEnd - load.pollStart) / 1000;
      const statuses = (m: Record<string, number>) => Object.entries(m).map(([k, v]) => `${k} x${v}`).join(', ');
      const delivered = (c: Counts) => deliveredSince(before, c);
      const fin = delivered(after);
      const finT = timeline[timeline.length - 1]?.t ?? Number.NaN;
      out.push(
        '',
        `3. End to end, open loop: ${runRate} events/s for ${flags['e2e-seconds']} s (${flags['clicks-per-postback'] ? `1 postback after every ${flags['clicks-per-postback']} clicks` : 'clicks only'}), then up to ${flags.settle} s to settle`,
        ...(runs.length > 1 ? [`   (the detailed run of the sweep --rates ${flags.rates.join(',')}; every rate is summed up in the table after it)`] : []),
        `   clicks and postbacks to the hit server, followed through the API of the stack in the bench process; where each process ran:`,
        `   ${e2eLayout}`,
        `   sent ${load.total} events in ${sendSecs.toFixed(2)} s = ${rate(load.total / sendSecs)} events/s achieved (target ${runRate}); send lag behind schedule p50 ${ms(percentile(lag, 50))} ms,`,
        `   p99 ${ms(percentile(lag, 99))} ms, max ${ms(lag[lag.length - 1] ?? Number.NaN)} ms; at most ${load.inFlightMax} requests in flight; ${load.unanswered} unanswered at the end`,
        `   clicks:    ${load.clicksSent} sent, answers ${statuses(load.clickStatus)}; latency p50 ${ms(percentile(clickLat, 50))} ms, p99 ${ms(percentile(clickLat, 99))} ms`,
        `   postbacks: ${load.postbacksSent} sent, answers ${statuses(load.postbackStatus)}; latency p50 ${ms(percentile(pbLat, 50))} ms, p99 ${ms(percentile(pbLat, 99))} ms`,
        `   delivered ${finT.toFixed(0)} s after the first send: Firestore ${fin.fc} of ${answered.clicks} clicks (${rate((fin.fc / Math.max(1, answered.clicks)) * 100)}%), ${fin.fv} of ${answered.postbacks} conversions;`,
        `   report ${fin.rc} clicks (${rate((fin.rc / Math.max(1, answered.clicks)) * 100)}%), ${fin.rv} conversions`,
        ...(() => {
          // Delivery while the generator was sending, from the totals sampled every 2 s.
          const w = whileSending(detailed, cpuKeys);
          if (!w) return [];
          return [
            `   while sending (first ${w.t.toFixed(0)} s): clicks reached Firestore at ${rate(w.firestorePerSec)}/s and the report at ${rate(w.reportPerSec)}/s, against ${rate(w.sentClicksPerSec)} clicks/s sent;`,
            w.firestorePerSec < 0.9 * w.sentClicksPerSec || w.reportPerSec < 0.9 * w.sentClicksPerSec
              ? '   the workers fell behind, so the backlog (and every later event\'s delay) grew for as long as the run lasted.'
              : '   the workers kept up with the sending rate.',
            `   CPU meanwhile (% of one core): ${cpuKeys.map((g) => `${g} ${percent(w.cpu[g])}`).join(', ')}; the bench process's event loop (API,`,
            `   analytics worker and its relay: one thread) was busy ${percent(w.cpu[loopKey])} of the time`,
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
            row('postback -> conversion list', delays(load.samples, 'postback', 'conversionAt'), delays(idle.samples, 'postback', 'conversionAt')),
          ],
        ),
        '',
        '   the same delays by when the event was sent (p50 / p99 ms of the followed events sent in each 5 s of the run):',
        (() => {
          const paths = [['click', 'firestoreAt'], ['click', 'reportAt'], ['postback', 'conversionAt']] as const;
          const byWindow = paths.map(([kind, at]) => delaysBySendTime(load.samples, kind, at, load.firstSend, 5000));
          const windows = Math.max(...byWindow.map((w) => w.length));
          return table(
            ['sent at s', 'click -> Firestore', 'click -> report', 'postback -> conv.'],
            Array.from({ length: windows }, (_, i) => [
              `${i * 5}-${i * 5 + 5}`,
              ...byWindow.map((w) => (w[i]?.n ? `${fmt(w[i]!.p50)} / ${fmt(w[i]!.p99)}` : '-')),
            ]),
          );
        })(),
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
          ['t s', 'sent', 'Firestore clicks', '/s', 'report clicks', '/s', 'Firestore conv.', 'report conv.', ...cpuKeys.map((g) => `${g} CPU`), loopKey],
          timeline.map((p, i) => {
            const prev = i ? timeline[i - 1]! : { t: 0, c: before };
            const x = delivered(p.c);
            const y = delivered(prev.c);
            return [
              p.t.toFixed(1), String(Math.min(load.total, Math.round(runRate * p.t))), String(x.fc), rate((x.fc - y.fc) / (p.t - prev.t)), String(x.rc), rate((x.rc - y.rc) / (p.t - prev.t)), String(x.fv), String(x.rv),
              ...[...cpuKeys, loopKey].map((g) => percent(p.cpu[g])),
            ];
          }),
        ),
        '',
        '   how: the generator (a worker thread) sends on a fixed schedule whatever the answers; each followed click gets a unique sub1.',
        `   Followed clicks are polled through the API (GET clicks/{id}) every ${flags['poll-ms']} ms while younger than 2 s, then every age/8 (at most 1 s),`,
        `   all together within a budget of ${budget} polls/s; one report query (groupBy=sub1, this campaign) every ${Math.max(flags['poll-ms'], 250)} ms serves all`,
        `   followed clicks, and one conversion list query (GET conversions?campaignId=…&from=<newest seen - 3 s>, newest first, paged) ${flags['poll-ms']} ms after`,
        `   the last answered serves all followed postbacks (every 2 s from 15 s back, for bookings that committed later: ${load.deepSeen} first seen so). A delay runs to the`,
        '   arrival of the first answer that shows the event, so it includes',
        '   up to one poll interval (longer when the budget is short) and the read itself: an upper bound.',
        `   polling load: ${load.polls} polls + ${load.reportPolls} report queries + ${load.listPolls} conversion list pages in ${pollSecs.toFixed(0)} s = ${rate((load.polls + load.reportPolls + load.listPolls) / pollSecs)}/s, ${rate(((load.polls + load.reportPolls + load.listPolls) / pollSecs / (load.total / sendSecs)) * 100)}% of the event rate;`,
        `   polls waited for the budget p50 ${ms(percentile(sortedOf(load.pollWait), 50))} ms, p99 ${ms(percentile(sortedOf(load.pollWait), 99))} ms past their due time${percentile(sortedOf(load.pollWait), 90) > flags['poll-ms'] ? ' (the budget was short: the delays above are coarser; raise --poll-budget or follow fewer events)' : ''};`,
        `   up to ${load.followersMax} events followed at once; poll answer p50 ${ms(percentile(sortedOf(load.pollLatency), 50))} ms; report query p50 ${ms(percentile(sortedOf(load.reportPollLatency), 50))} ms, p99 ${ms(percentile(sortedOf(load.reportPollLatency), 99))} ms;`,
        `   conversion list page p50 ${ms(percentile(sortedOf(load.listPollLatency), 50))} ms, p99 ${ms(percentile(sortedOf(load.listPollLatency), 99))} ms; ${load.pollErrors} poll errors`,
      );
    }
    if (runs.length && idle) {
      // The sweep: one row per rate.
      const pair = (s: DelayStats) => `${fmtDelay(s.p50)} / ${fmtDelay(s.p99)}`;
      const rows = runs.map((run) => {
        const sendSecs = (run.load.lastSend - run.load.t0) / 1000;
        const w = whileSending(run, cpuKeys);
        const d = pathDelays(run.load.samples);
        const fin = deliveredSince(run.before, run.after);
        return {
          run, d,
          cells: [
            String(run.rate), rate(run.load.total / sendSecs), w ? rate(w.sentClicksPerSec) : 'n/a', w ? rate(w.firestorePerSec) : 'n/a', w ? rate(w.reportPerSec) : 'n/a',
            `${percent((fin.fc / Math.max(1, run.answered.clicks)) * 100)} / ${percent((fin.rc / Math.max(1, run.answered.clicks)) * 100)}`,
            pair(d.firestore), pair(d.report), d.conversion.n ? pair(d.conversion) : 'n/a',
            metGoal(d) ? 'met' : 'missed', ...[...cpuKeys, loopKey].map((g) => percent(w?.cpu[g])),
          ],
        };
      });
      const met = rows.filter((r) => metGoal(r.d)).map((r) => r.run.rate);
      const missed = rows.filter((r) => !metGoal(r.d)).map((r) => r.run.rate);
      const knee = met.length ? Math.max(...met) : undefined;
      const missedBelow = knee === undefined ? [] : missed.filter((r) => r < knee);
      out.push(
        '',
        `3a. End to end, rate sweep: the open loop of part 3 at ${flags.rates.join(', ')} events/s in turn, ${flags['e2e-seconds']} s each, up to ${flags.settle} s to settle;`,
        '   each rate on a campaign and link of its own, the workers finishing the one before first. "sent/s" is the achieved send rate (events),',
        '   "clicks sent/s" its clicks (answered); "to Firestore/s" and "to report/s" the clicks delivered per second while sending (Firestore',
        '   counters, report totals), to compare with "clicks sent/s"; "in by the end" the share of answered clicks in Firestore / the report',
        '   when the run ended (after the settle time); delays in ms, p50 / p99, from sending to the first API answer that shows the event',
        `   ("not seen": not by the end of the settle time); CPU in % of one core, averaged while sending (${usableCores().length} usable cores:`,
        `   ${usableCores().length * 100}% is the whole machine); "${loopKey}": how busy the bench process's one JavaScript thread was (API, analytics`,
        `   worker and its relay); the state worker and its relay run in a process of their own ("${stateWorkerGroup} CPU").`,
        table(
          ['rate/s', 'sent/s', 'clicks sent/s', 'to Firestore/s', 'to report/s', 'in by the end', 'click -> Firestore', 'click -> report', 'postback -> conv.', 'p99 < 2 s', ...cpuKeys.map((g) => `${g} CPU`), loopKey],
          rows.map((r) => r.cells),
        ),
        knee === undefined
          ? `   knee: none of the rates met p99 < 2 s on all three paths (the lowest tried: ${Math.min(...flags.rates)} events/s).`
          : `   knee: ${knee} events/s is the highest rate that met p99 < 2 s on all three paths${missed.filter((r) => r > knee).length ? `; ${missed.filter((r) => r > knee).join(', ')} missed` : ' (the highest tried)'}${missedBelow.length ? ` (though ${missedBelow.join(', ')} missed below it: noisy, repeat the run)` : ''}.`,
      );
    }
    if (drain) {
      const { clicks: n, postbacks: p, publishSecs, before, beforeRelays, points, stopped } = drain;
      const early = deliveredSince(before, beforeRelays);
      const paths = [
        { label: 'clicks -> Firestore (stats counters)', key: 'fc', total: n },
        { label: 'clicks -> report (analytics, DuckDB)', key: 'rc', total: n },
        { label: 'conversions -> Firestore (state worker)', key: 'fv', total: p },
        { label: 'conversions -> report (2nd hop: conversion event)', key: 'rv', total: p },
      ] as const;
      /** When a share of the path's events was first seen in, from the samples (an upper bound: up to one sample late). */
      const reached = (key: (typeof paths)[number]['key'], count: number) => points.find((pt) => deliveredSince(before, pt.c)[key] >= count)?.t;
      const at = (v: number | undefined) => (v === undefined ? 'not yet' : v.toFixed(1));
      const pathRows = paths.filter((x) => x.total > 0).map((x) => {
        const t10 = reached(x.key, Math.ceil(x.total * 0.1));
        const t50 = reached(x.key, Math.ceil(x.total * 0.5));
        const t90 = reached(x.key, Math.ceil(x.total * 0.9));
        const t100 = reached(x.key, x.total);
        const got = deliveredSince(before, points[points.length - 1]?.c ?? before)[x.key];
        const peak = Math.max(0, ...points.map((pt, i) => (deliveredSince(before, pt.c)[x.key] - (i ? deliveredSince(before, points[i - 1]!.c)[x.key] : 0)) / (pt.t - (i ? points[i - 1]!.t : 0))));
        return {
          t100,
          cells: [
            x.label, `${got}/${x.total}`, at(t10), at(t50), at(t90), at(t100),
            t100 === undefined ? 'n/a' : rate(x.total / t100),
            t10 !== undefined && t90 !== undefined && t90 > t10 ? rate((Math.ceil(x.total * 0.9) - Math.ceil(x.total * 0.1)) / (t90 - t10)) : 'n/a',
            rate(peak),
          ],
        };
      });
      // Whole destinations: every event in (clicks and conversions), and the CPU until then.
      const allIn = (keys: readonly ('fc' | 'rc' | 'fv' | 'rv')[]) => {
        const ts = keys.map((k) => reached(k, k === 'fc' || k === 'rc' ? n : p));
        return ts.some((t) => t === undefined) ? undefined : Math.max(...(ts as number[]));
      };
      const firestoreIn = allIn(p ? ['fc', 'fv'] : ['fc']);
      const reportIn = allIn(p ? ['rc', 'rv'] : ['rc']);
      const lastIn = points.findIndex((pt) => pt.t >= Math.max(firestoreIn ?? Infinity, reportIn ?? Infinity));
      const cpuDraining = cpuOver(lastIn >= 0 ? points.slice(0, lastIn + 1) : points, [...cpuKeys, loopKey]);
      const machineBusy = cpuKeys.reduce((sum, g) => sum + (cpuDraining[g] ?? Number.NaN), 0);
      const loopBusy = cpuDraining[loopKey] ?? Number.NaN;
      const stateBusy = cpuDraining[stateWorkerGroup] ?? Number.NaN;
      const threads = [
        ...(loopBusy >= 90 ? ['the bench process\'s one JavaScript thread (the analytics worker, its relay and the API share its event loop here)'] : []),
        ...(stateBusy >= 90 ? ['the state worker process\'s JavaScript thread (the state writer and its relay)'] : []),
      ];
      const limit =
        machineBusy >= 90 * usableCores().length
          ? 'limited by CPU: the whole machine was busy'
          : threads.length
            ? `limited by ${threads.join(' and by ')}`
            : `neither the machine nor a worker's thread was saturated: waiting (on the emulators' answers, with at most ${flags['drain-in-flight']} messages in flight per relay)`;
      // The baseline of this run: how fast the same events went into the topic with nobody pulling.
      const perSec = (v: number | undefined) =>
        v === undefined ? 'not all in' : `${rate((n + p) / v)} events/s (all in after ${v.toFixed(1)} s; ${(publishSecs / v).toFixed(2)}x the publish alone)`;
      out.push(
        '',
        `3b. Drain, the back half alone: ${n} clicks${p ? ` and ${p} postbacks (one after every ${flags['clicks-per-postback']} clicks, for the click just before it)` : ' (clicks only)'} published`,
        '   straight to the tracking topic from the bench process with the functions\' own publisher (publishTrackingEvent) and event',
        '   shapes, on a campaign and link of their own, while the workers\' relays were stopped (the subscriptions existed, so the emulator',
        '   kept every message); then the relays started and the workers drained the backlog. The hit server and the load generator were',
        '   idle throughout: this measures the state worker (Firestore; in a process of its own) and the analytics worker (DuckDB; in the',
        '   bench process) with their relays and the emulators alone, on every core, which in production scale on instances of their own,',
        '   apart from the hit functions. A postback reaches the report as the conversion event the state worker publishes in turn: a',
        '   second trip through the topic, queued behind what the analytics worker still has to take. Relays (each beside its worker):',
        `   a streaming pull per subscription, POSTing to its worker in the push format, at most ${flags['drain-in-flight']} messages in flight each`,
        `   (--drain-in-flight; ${defaultRelayInFlight}, the default of scripts/local/push-relay.ts, is what the stack's relays keep in the open loop).`,
        `   published in ${publishSecs.toFixed(1)} s (${rate((n + p) / publishSecs)} events/s, the publish alone, nobody pulling); delivered before the relays started:`,
        `   ${early.fc} clicks, ${early.fv} conversions in Firestore, ${early.rc} / ${early.rv} in the report (expected 0)`,
        `   time from starting the relays until a share of the events was in (s, sampled every second: up to 1 s late)${stopped === 'done' ? '' : stopped === 'stalled' ? ' — stopped: nothing moved for 30 s' : ` — stopped at --drain-timeout ${flags['drain-timeout']} s`}:`,
        table(['path', 'in', '10% s', '50% s', '90% s', '100% s', 'overall /s', '10-90% /s', 'peak 1 s /s'], pathRows.map((r) => r.cells)),
        `   Firestore took in ${perSec(firestoreIn)}; the report ${perSec(reportIn)} (the open loop's --rate: ${flags.rate} events/s)`,
        `   CPU while draining (until the last event was in, % of one core): ${cpuKeys.map((g) => `${g} ${percent(cpuDraining[g])}`).join(', ')}; the machine`,
        `   ${percent(machineBusy)} busy of ${usableCores().length * 100}%, the bench process's event loop busy ${percent(loopBusy)} of the time, the state worker process ${percent(stateBusy)}:`,
        `   ${limit}`,
        '',
        '   drained over time (totals of the drain campaign from GET stats = Firestore counters and GET reports, every second from the relays\' start):',
        table(
          ['t s', 'Firestore clicks', '/s', 'report clicks', '/s', 'Firestore conv.', 'report conv.', ...cpuKeys.map((g) => `${g} CPU`), loopKey],
          points.map((pt, i) => {
            const prev = i ? points[i - 1]! : { t: 0, c: beforeRelays };
            const x = deliveredSince(before, pt.c);
            const y = deliveredSince(before, prev.c);
            return [
              pt.t.toFixed(1), String(x.fc), rate((x.fc - y.fc) / (pt.t - prev.t)), String(x.rc), rate((x.rc - y.rc) / (pt.t - prev.t)), String(x.fv), String(x.rv),
              ...[...cpuKeys, loopKey].map((g) => percent(pt.cpu[g])),
            ];
          }),
        ),
      );
    }
    if (diag.length) out.push(...diag);
    out.push(
      '',
      `load average (1 min) at the start ${startLoad.toFixed(2)}, at the end ${loadavg()[0]!.toFixed(2)}: other work on this machine (another benchmark, a build)`,
      `  shares the ${cpus().length} cores and moves every figure (pinning keeps our own processes apart, not theirs); compare runs made on a quiet machine.`,
      '',
      'notes:',
      '  - The emulators are far slower than production Pub/Sub and Firestore and share the machine with the bench process; read',
      '    the ratios between runs on this machine, not the absolute figures as production latencies.',
      '  - Closed loop: req/s ~= connections / mean latency. The open loop of part 3 does not slow down when the server does.',
      '  - Part 3 runs the whole pipeline on this machine at once: the front half (the load generator, the hit server answering and',
      '    publishing into the emulator) and the back half (the relays, the state worker in its process, the analytics worker in the',
      `    bench process, both emulators) share its ${cpus().length} cores, where production gives the hit functions and each worker instances`,
      '    of their own. The rate sweep (--rates) shows where the shared machine stops meeting p99 < 2 s (the knee) and what each side',
      '    used on the way; the drain (--drain) measures the back half alone, with the hit server and the generator idle: its rate is',
      '    what the workers can take in when they have the machine to themselves, an upper bound for the open loop on the same machine,',
      '    not a production figure.',
    );
    console.log(out.join('\n'));
    return 0;
  } catch (err) {
    failed = true;
    if (out.length && !signal.aborted) console.log(out.join('\n'));
    return failureCode(err, signal);
  } finally {
    await quiesce?.().catch(() => undefined);
    // Before the stack: the hit server and the state worker hold clients of the emulators.
    await hits?.close().catch(() => undefined);
    await baselines?.close().catch(() => undefined);
    await bareFramework?.close().catch(() => undefined);
    await clickServer?.close().catch(() => undefined);
    await stateWorker?.close().catch(() => undefined);
    for (const s of servers) await closeServer(s).catch(() => undefined);
    await stopBenchStackAndReport(stack, { failed, signal, started, log: progress });
  }
}

runMain(parse, usage, main);
