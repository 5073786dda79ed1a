/**
 * Benchmark of the two money paths on the real Firestore emulator, called in-process:
 *   - a payout run (functions/services/payout-runs.ts runPayouts, dry-run payout provider) over A affiliates and
 *     N approved conversions, preceded by its planning-only dry run;
 *   - the commissions job (functions/services/commissions-job.ts approveDueConversions) over M pending conversions.
 * Prints wall time, Firestore operations (counted on the wire, see lib/money-grpc-counter.ts), RPCs, peak heap, and
 * each phase as a multiple of a plain unthrottled BulkWriter write of the same number of documents to the same
 * emulator in the same run. Prints figures only; it never asserts timings.
 *
 *   npx tsx scripts/bench/money.ts [--affiliates 400] [--conversions 8000] [--pending 1500] [--pending-groups 1]
 *                                  [--probe-pending 2000] [--probe-sweeps 1] [--campaigns 10] [--prod-rpc-ms 10]
 *   npx tsx scripts/bench/money.ts --affiliates 10000 --conversions 200000 --pending 100000   # the issue's full sizes:
 *     hours on the emulator, which scans a whole collection per query (the output of a smaller run extrapolates)
 *
 * On the emulator the commissions job completes only when its transactions do not run in parallel (see --pending-groups
 * and the contention probe): the emulator's coarse locks deadlock its parallel transactions, which query the ledger.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem, type as osType } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { execFileSync } from 'node:child_process';
import type { Firestore } from '@google-cloud/firestore';
import { startEmulator, type RunningEmulator } from '../local/emulators';
import { failureCode, parseFlags, runMain, UsageError } from './lib/cli';
import { startCountingProxy, sum, type CountingProxy, type OpStats } from './lib/money-grpc-counter';
import { baselineDocs, bulkWrite, conversionDocs, minimumPayout, cpaPayout, orgDocs, planOrg, type SeedPlan } from './lib/money-seed';
import { ratio, table } from './lib/report';
import { abortOnSignals } from './lib/stack';

const full = { affiliates: 10_000, conversions: 200_000, pending: 100_000 } as const;
/** The measured commissions job is re-run (as the next scheduler tick would) at most this often when a sweep throws. */
const maxSweeps = 3;

const usage = `usage: npx tsx scripts/bench/money.ts [options]
  --affiliates N      affiliates, all onboarded and payable (default 400; full size ${full.affiliates})
  --conversions N     approved conversions (one commission ledger entry each) spread evenly over the affiliates and
                      campaigns, for the payout run (default 8000; full size ${full.conversions}); 0 skips the payout phase
  --pending N         pending conversions, hold period over, for the commissions job (default 1500; full size ${full.pending});
                      0 skips the commissions phase
  --pending-groups N  (campaign, affiliate) pairs the pending conversions are spread over (default 1). The job approves one
                      pair's conversions one after another and up to 16 pairs in parallel; on the emulator only 1 completes
  --probe-pending N   contention probe: N more pending conversions spread over every pair, then --probe-sweeps sweeps of the
                      job, run last; shows the emulator's lock timeouts (default 2000; 0 skips the probe)
  --probe-sweeps N    sweeps of the job in the contention probe (default 1)
  --campaigns N       campaigns (default 10)
  --prod-rpc-ms MS    assumed Firestore round trip in production, only for the labelled model at the end (default 10)`;

interface Flags {
  affiliates: number;
  conversions: number;
  pending: number;
  pendingGroups: number;
  probePending: number;
  probeSweeps: number;
  campaigns: number;
  prodRpcMs: number;
}

function parse(argv: string[]): Flags {
  const flags = parseFlags(argv, usage, {
    affiliates: { flag: 'affiliates', default: 400, min: 1, max: 1_000_000 },
    conversions: { flag: 'conversions', default: 8000, min: 0, max: 10_000_000 },
    pending: { flag: 'pending', default: 1500, min: 0, max: 10_000_000 },
    pendingGroups: { flag: 'pending-groups', default: 1, min: 1, max: 10_000_000 },
    probePending: { flag: 'probe-pending', default: 2000, min: 0, max: 10_000_000 },
    probeSweeps: { flag: 'probe-sweeps', default: 1, min: 1, max: 20 },
    campaigns: { flag: 'campaigns', default: 10, min: 1, max: 1000 },
    prodRpcMs: { flag: 'prod-rpc-ms', default: 10, min: 1, max: 1000 },
  });
  if (flags.conversions === 0 && flags.pending === 0 && flags.probePending === 0) throw new UsageError('--conversions, --pending and --probe-pending are all 0: nothing to measure');
  return flags;
}

const t0 = Date.now();
const loadAtStart = loadavg().map((l) => l.toFixed(2)).join(' ');
const progress = (msg: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (msVal: number) => (msVal / 1000).toFixed(msVal < 10_000 ? 2 : 1);
const per = (msVal: number) => (msVal < 1 ? msVal.toFixed(3) : msVal < 10 ? msVal.toFixed(2) : msVal.toFixed(1));
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

/** A gc() for clean heap baselines (tsx does not pass --expose-gc). */
const gc: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return () => undefined;
  }
})();

/** Peak heapUsed (garbage included) above the level measured after a gc when the phase started. */
async function withMemory<T>(fn: () => Promise<T>): Promise<{ value: T; heapPeak: number }> {
  gc();
  const base = process.memoryUsage().heapUsed;
  let heap = base;
  const timer = setInterval(() => {
    heap = Math.max(heap, process.memoryUsage().heapUsed);
  }, 25);
  try {
    const value = await fn();
    return { value, heapPeak: Math.max(heap, process.memoryUsage().heapUsed) - base };
  } finally {
    clearInterval(timer);
  }
}

interface Phase {
  label: string;
  /** What "per unit" means for this phase: conversions handled, or documents written. */
  units: number;
  ms: number;
  ops: OpStats;
  heapPeak?: number;
}

const rpcCount = (o: OpStats) => [...o.methods.values()].reduce((a, m) => a + m.calls, 0);
const codeCount = (o: OpStats, code: number) => [...o.methods.values()].reduce((a, m) => a + (m.codes.get(code) ?? 0), 0);
const reads = (o: OpStats) => sum(o.reads);
/** Firestore bills a lookup of a missing document and a query with no result as one read each. */
const billedReads = (o: OpStats) => sum(o.reads) + sum(o.missing) + sum(o.emptyQueries);
const writes = (o: OpStats) => sum(o.writes);

function phaseTable(phases: Phase[]): string {
  return table(
    ['phase', 'units', 'wall s', 'ms/unit', 'docs read', 'missing', 'empty q', 'billed reads', 'writes', 'RPCs', 'in flight', 'max', 'ABORTED', 'heap MiB'],
    phases.map((p) => [
      p.label, fmt(p.units), secs(p.ms), per(p.ms / p.units), fmt(reads(p.ops)), fmt(sum(p.ops.missing)), fmt(sum(p.ops.emptyQueries)), fmt(billedReads(p.ops)), fmt(writes(p.ops)),
      fmt(rpcCount(p.ops)), p.ops.meanInFlight.toFixed(2), String(p.ops.maxInFlight), fmt(codeCount(p.ops, 10)), p.heapPeak === undefined ? '-' : mib(p.heapPeak),
    ]),
  );
}

function collectionTable(phases: Phase[]): string {
  const rows: string[][] = [];
  for (const p of phases) {
    const names = [...new Set([...p.ops.reads.keys(), ...p.ops.missing.keys(), ...p.ops.emptyQueries.keys(), ...p.ops.writes.keys()])].sort();
    for (const c of names) {
      const g = (m: Map<string, number>) => m.get(c) ?? 0;
      rows.push([p.label, c, fmt(g(p.ops.reads)), fmt(g(p.ops.missing)), fmt(g(p.ops.emptyQueries)), fmt(g(p.ops.writes)), (g(p.ops.reads) / p.units).toFixed(2), (g(p.ops.writes) / p.units).toFixed(2)]);
    }
  }
  return table(['phase', 'collection', 'docs read', 'missing', 'empty q', 'writes', 'reads/unit', 'writes/unit'], rows, ['l', 'l']);
}

function methodTable(phases: Phase[]): string {
  const rows: string[][] = [];
  for (const p of phases) {
    for (const [name, m] of [...p.ops.methods.entries()].sort((a, b) => b[1].totalMs - a[1].totalMs)) {
      const codes = [...m.codes.entries()].filter(([c]) => c !== 0).map(([c, n]) => `${grpcCode[c] ?? c} x${n}`).join(', ');
      rows.push([p.label, name, fmt(m.calls), per(m.totalMs / m.calls), secs(m.totalMs), `${((m.totalMs / p.ms) * 100).toFixed(0)}%`, codes || '-']);
    }
  }
  return table(['phase', 'RPC', 'calls', 'mean ms', 'sum s', 'sum/wall', 'failed'], rows, ['l', 'l', 'r', 'r', 'r', 'r', 'l']);
}

const grpcCode: Record<number, string> = { 1: 'CANCELLED', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 6: 'ALREADY_EXISTS', 9: 'FAILED_PRECONDITION', 10: 'ABORTED', 13: 'INTERNAL', 14: 'UNAVAILABLE' };

/**
 * A payout run's billed reads from its code path (N approved entries, A affiliates with entries, E entries claimed, P
 * payouts): see the derivation printed with the table.
 */
function runReads(N: number, A: number, E: number, P: number): number {
  return N + A + 3 * E + 6 * P + 1 + (P + 3) + 3;
}

function emulatorVersion(): string {
  try {
    const out = execFileSync('gcloud', ['version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000 });
    const sdk = /Google Cloud SDK (\S+)/.exec(out)?.[1];
    const emu = /cloud-firestore-emulator (\S+)/.exec(out)?.[1];
    return `gcloud SDK ${sdk ?? '?'}, cloud-firestore-emulator ${emu ?? '?'}`;
  } catch {
    return 'gcloud version unknown';
  }
}

async function main(flags: Flags): Promise<number> {
  const signal = abortOnSignals(progress);
  const interrupted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
  interrupted.catch(() => undefined);
  /** Lets Ctrl-C end a long phase at once: the finally block then stops the emulator, and the process exits. */
  const step = <T>(p: Promise<T>): Promise<T> => Promise.race([p, interrupted]);

  // Configuration is parsed once, at first use: all of it is set before any functions/ module is loaded.
  const dataDir = mkdtempSync(join(tmpdir(), 'abp-bench-money-'));
  const project = `abp-bench-money-${randomBytes(4).toString('hex')}`;
  Object.assign(process.env, { GOOGLE_CLOUD_PROJECT: project, ABP_DATA_DIR: dataDir, ABP_ENV: 'local', METADATA_SERVER_DETECTION: 'none' });
  delete process.env.STRIPE_SECRET_KEY; // the dry-run payout provider: no money moves, nothing leaves the machine
  delete process.env.FIRESTORE_PREFER_REST; // the counting relay speaks gRPC

  let emulator: RunningEmulator | undefined;
  let pubsubEmulator: RunningEmulator | undefined;
  let proxy: CountingProxy | undefined;
  let direct: Firestore | undefined;
  let closeProduct: (() => Promise<void>) | undefined;
  let closePublisher: (() => Promise<void>) | undefined;
  let failed = false;
  try {
    progress(`Starting the Firestore emulator on a free port (project ${project})…`);
    emulator = await step(startEmulator('firestore', 'any', { project, logDir: join(dataDir, 'logs') }));
    // The commissions job publishes each approval's analytics row: to a Pub/Sub emulator of its own, on a topic with
    // no subscription (nothing downstream is measured). Without one the client looks for real credentials.
    progress('Starting the Pub/Sub emulator on a free port…');
    pubsubEmulator = await step(startEmulator('pubsub', 'any', { project, logDir: join(dataDir, 'logs') }));
    process.env.PUBSUB_EMULATOR_HOST = pubsubEmulator.hostPort;
    const { pubsub, closePubSub } = await import('../../functions/adapters/pubsub');
    const { topics } = await import('../../shared/names');
    await pubsub().createTopic(topics.trackingEvents);
    closePublisher = closePubSub;
    proxy = await startCountingProxy(emulator.hostPort);
    // Seeding and the checks use a client of their own, straight to the emulator (not counted); the code under test
    // and the baselines go through the counting relay.
    process.env.FIRESTORE_EMULATOR_HOST = emulator.hostPort;
    const { Firestore: FirestoreClient } = await import('@google-cloud/firestore');
    direct = new FirestoreClient({ projectId: project, ignoreUndefinedProperties: true });
    process.env.FIRESTORE_EMULATOR_HOST = proxy.hostPort;

    const { firestore, closeFirestore } = await import('../../functions/adapters/firestore');
    const { runPayouts } = await import('../../functions/services/payout-runs');
    const { approveDueConversions } = await import('../../functions/services/commissions-job');
    const { OrgScope } = await import('../../functions/services/tenancy');
    const { payoutProvider } = await import('../../functions/adapters/payouts');
    const { createDryRunProvider } = await import('../../functions/adapters/payouts/dry-run-provider');
    closeProduct = closeFirestore;
    const db = firestore();
    const provider = payoutProvider();
    if (provider.kind !== 'dry-run') throw new Error(`Expected the dry-run payout provider, got ${provider.kind}`);
    const relay = proxy;
    const take = () => relay.take();
    const seedDb = direct;

    // ---- seed -------------------------------------------------------------------------------------------------------
    const plan: SeedPlan = planOrg(flags.campaigns, flags.affiliates);
    const org = direct.doc(`orgs/${plan.orgId}`);
    const dryRunProvider = createDryRunProvider();
    const accounts = new Map<string, string>();
    for (const id of plan.affiliateIds) accounts.set(id, (await dryRunProvider.createConnectedAccount({ orgId: plan.orgId, affiliateId: id, email: `${id}@example.com` })).accountId);
    progress(`Seeding org ${plan.orgId}: ${fmt(flags.campaigns)} campaigns, ${fmt(flags.affiliates)} affiliates, ${fmt(flags.conversions)} approved + ${fmt(flags.pending)} pending conversions with their ledger entries…`);
    const seedOrg = await step(bulkWrite(direct, orgDocs(direct, plan, (id) => accounts.get(id)!), { signal }));
    const seedApproved = await step(bulkWrite(direct, conversionDocs(direct, plan, { kind: 'approved', count: flags.conversions, tag: 'approved' }), { signal }));
    const tierGroups = new Set<string>();
    const seedPending = await step(bulkWrite(direct, conversionDocs(direct, plan, { kind: 'pending', count: flags.pending, tag: 'pending', groups: flags.pendingGroups }, tierGroups), { signal }));
    const seeded = [seedOrg, seedApproved, seedPending].reduce((a, x) => ({ docs: a.docs + x.docs, ms: a.ms + x.ms }), { docs: 0, ms: 0 });
    progress(`Seeded ${fmt(seeded.docs)} documents in ${secs(seeded.ms)} s (${fmt(seeded.docs / (seeded.ms / 1000))} docs/s).`);

    // ---- relay overhead, measured in this run -------------------------------------------------------------------------
    progress('Measuring the counting relay\'s overhead (serial gets and a BulkWriter write, direct vs relayed)…');
    const sample = plan.affiliateIds.slice(0, 100).map((id) => `orgs/${plan.orgId}/affiliates/${id}`);
    const serialGets = async (c: Firestore) => {
      const started = performance.now();
      for (const path of sample) await c.doc(path).get();
      return (performance.now() - started) / sample.length;
    };
    const rounds: [number, number][] = [];
    for (let round = 0; round < 6; round++) rounds.push([await step(serialGets(direct)), await step(serialGets(db))]);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const measured = rounds.slice(1); // the first round warms both channels
    const getDirect = median(measured.map((r) => r[0]));
    const getRelayed = median(measured.map((r) => r[1]));
    const relayMs = Math.max(0, median(measured.map((r) => r[1] - r[0])));
    const calN = 5_000;
    const bwDirect = await step(bulkWrite(direct, baselineDocs(direct, plan, calN, 'calDirect'), { signal }));
    const bwRelayed = await step(bulkWrite(db, baselineDocs(db, plan, calN, 'calRelayed'), { signal }));
    take();

    // The emulator answers a query by scanning the queried collection (production Firestore walks an index), so each
    // per-item query costs more as the ledger grows. Measured here to extrapolate emulator times beyond this run's size.
    const queryMs = async (q: FirebaseFirestore.Query) => {
      const xs: number[] = [];
      for (let i = 0; i < 11; i++) {
        const started = performance.now();
        await step(q.get());
        if (i >= 2) xs.push(performance.now() - started);
      }
      return median(xs);
    };
    const ledgerDocs = flags.conversions + flags.pending;
    const scan = {
      small: await queryMs(org.collection('campaigns').where('conversionId', '==', '__none__')),
      ledger: await queryMs(org.collection('ledger').where('conversionId', '==', '__none__')),
      perDocMs: 0,
      at: (docs: number) => scan.small + scan.perDocMs * Math.max(0, docs - flags.campaigns),
    };
    scan.perDocMs = Math.max(0, (scan.ledger - scan.small) / Math.max(1, ledgerDocs - flags.campaigns));
    const fullLedgerDocs = full.conversions + full.pending;
    /** This emulator's time at the full size: the non-query part scaled linearly, each query costed at the full ledger size. */
    const emulatorFull = (p: Phase, scale: number) => {
      const q = p.ops.methods.get('RunQuery');
      const qMs = q?.totalMs ?? 0;
      const wallShare = p.ops.meanInFlight > 1 ? 1 / p.ops.meanInFlight : 1; // overlapping queries do not add up in wall time
      return scale * (p.ms - qMs * wallShare) + scale * (q?.calls ?? 0) * scan.at(fullLedgerDocs) * wallShare;
    };

    const phases: Phase[] = [];
    const checks: string[] = [];
    const expected: string[][] = [];
    let payoutRun: Phase | undefined;
    let dryRun: Phase | undefined;
    let payoutBase: Phase | undefined;
    let commissions: Phase | undefined;
    let commissionsBase: Phase | undefined;
    let probe: Phase | undefined;
    let commissionsCompleted = false;
    let retained: { entries: number; bytes: number } | undefined;
    let payouts = 0;
    const pendingLeft = async () => (await org.collection('conversions').where('status', '==', 'pending').count().get()).data().count;

    /** Sweeps of the job until one completes (as the next scheduler tick would re-run it: the job is idempotent). */
    const sweepJob = async (max: number, log: string[]) => {
      let approved = 0;
      let skipped = 0;
      for (let sweep = 1; sweep <= max; sweep++) {
        const sweepStart = performance.now();
        try {
          const r = await approveDueConversions(new Date());
          approved += r.approved;
          skipped += r.skipped;
          log.push(`sweep ${sweep}: completed in ${secs(performance.now() - sweepStart)} s (approved ${fmt(r.approved)}, skipped ${fmt(r.skipped)})`);
          return { approved, skipped, completed: true };
        } catch (err) {
          const msg = (err as Error).message.split('\n')[0]!;
          log.push(`sweep ${sweep}: THREW after ${secs(performance.now() - sweepStart)} s: ${msg} (${fmt(await pendingLeft())} conversions still pending)`);
          progress(`  ${log[log.length - 1]}`);
        }
      }
      return { approved, skipped, completed: false };
    };

    // ---- payout run ---------------------------------------------------------------------------------------------------
    if (flags.conversions > 0) {
      progress(`Baseline: BulkWriter (throttling off) writing ${fmt(flags.conversions)} ledger-sized documents through the relay…`);
      const b = await step(bulkWrite(db, baselineDocs(db, plan, flags.conversions, 'payout'), { signal }));
      payoutBase = { label: `baseline: BulkWriter ${fmt(flags.conversions)} docs`, units: b.docs, ms: b.ms, ops: take() };
      phases.push(payoutBase);

      const scope = OrgScope.system(plan.orgId, 'bench-money');
      progress(`Payout dry run (planning only) over ${fmt(flags.conversions)} approved entries…`);
      let started = performance.now();
      const dry = await step(withMemory(() => runPayouts(scope, { trigger: 'manual', dryRun: true })));
      dryRun = { label: 'payout dry run (plan only)', units: flags.conversions, ms: performance.now() - started, ops: take(), heapPeak: dry.heapPeak };
      phases.push(dryRun);
      progress(`Dry run took ${secs(dryRun.ms)} s.`);

      // What the run holds while planning: every approved entry, as a QuerySnapshot and as plain objects. Measured
      // on the same query with the uncounted client (same library), after a gc, on at most 20,000 entries.
      {
        gc();
        const before = process.memoryUsage().heapUsed;
        const snap = await step(org.collection('ledger').where('status', '==', 'approved').limit(20_000).get());
        const data = snap.docs.map((d) => d.data());
        gc();
        retained = { entries: snap.size, bytes: process.memoryUsage().heapUsed - before };
        if (data.length !== snap.size) throw new Error('unreachable');
      }

      progress(`Payout run: ${fmt(dry.value.payouts.length)} payouts planned for ${fmt(flags.affiliates)} affiliates…`);
      started = performance.now();
      const run = await step(withMemory(() => runPayouts(scope, { trigger: 'manual' })));
      payoutRun = { label: 'payout run', units: flags.conversions, ms: performance.now() - started, ops: take(), heapPeak: run.heapPeak };
      phases.push(payoutRun);
      payouts = run.value.payouts.length;
      progress(`Payout run took ${secs(payoutRun.ms)} s (${fmt(rpcCount(payoutRun.ops))} RPCs).`);

      const count = async (col: string, status: string) => (await org.collection(col).where('status', '==', status).count().get()).data().count;
      const byStatus = new Map<string, number>();
      for (const p of run.value.payouts) byStatus.set(p.status, (byStatus.get(p.status) ?? 0) + 1);
      const paidEntries = await count('ledger', 'paid');
      const paidConversions = await count('conversions', 'paid');
      const amount = run.value.payouts.reduce((a, p) => a + p.amount, 0);
      checks.push(
        `payout run ${run.value.status}: ${fmt(payouts)} payouts (${[...byStatus.entries()].map(([st, n]) => `${st} ${fmt(n)}`).join(', ')}), ${fmt(amount / 100)} USD simulated; ` +
          `ledger entries paid ${fmt(paidEntries)}/${fmt(flags.conversions)}, conversions paid ${fmt(paidConversions)}/${fmt(flags.conversions)}`,
      );
      // What the code path reads and writes when nothing contends (derivation printed with the table).
      const A = Math.min(flags.affiliates, flags.conversions); // affiliates with approved entries
      const P = payouts;
      const E = paidEntries; // entries claimed, then paid, by the run's payouts
      expected.push(
        ['payout dry run', fmt(flags.conversions + A), fmt(billedReads(dryRun.ops)), '0', fmt(writes(dryRun.ops))],
        ['payout run', fmt(runReads(flags.conversions, A, E, P)), fmt(billedReads(payoutRun.ops)), fmt(3 * E + 4 * P + 4), fmt(writes(payoutRun.ops))],
      );
    }

    // ---- commissions job ----------------------------------------------------------------------------------------------
    if (flags.pending > 0) {
      progress(`Baseline: BulkWriter (throttling off) writing ${fmt(flags.pending)} ledger-sized documents through the relay…`);
      const b = await step(bulkWrite(db, baselineDocs(db, plan, flags.pending, 'commissions'), { signal }));
      commissionsBase = { label: `baseline: BulkWriter ${fmt(flags.pending)} docs`, units: b.docs, ms: b.ms, ops: take() };
      phases.push(commissionsBase);

      progress(`Commissions job over ${fmt(flags.pending)} pending conversions in ${fmt(flags.pendingGroups)} (campaign, affiliate) group(s)…`);
      const log: string[] = [];
      const started = performance.now();
      const job = await step(withMemory(() => sweepJob(maxSweeps, log)));
      commissions = { label: 'commissions job', units: flags.pending, ms: performance.now() - started, ops: take(), heapPeak: job.heapPeak };
      phases.push(commissions);
      commissionsCompleted = job.value.completed;
      progress(`Commissions job took ${secs(commissions.ms)} s in ${log.length} sweep(s) (${fmt(rpcCount(commissions.ops))} RPCs).`);
      const left = await pendingLeft();
      const approvedEntries = (await org.collection('ledger').where('status', '==', 'approved').count().get()).data().count;
      checks.push(
        `commissions job: ${fmt(flags.pendingGroups)} group(s), ${log.length} sweep(s); approved ${fmt(job.value.approved)} (as reported by completed sweeps), skipped ${fmt(job.value.skipped)}; ` +
          `conversions still pending ${fmt(left)}, ledger entries approved ${fmt(approvedEntries)}/${fmt(flags.pending)}`,
        ...log.map((l) => `  ${l}`),
      );
      const M = flags.pending;
      const G = tierGroups.size;
      const pageQueries = Math.ceil(M / 500) + (M % 500 === 0 ? 1 : 0);
      expected.push(['commissions job', fmt(6 * M + (M % 500 === 0 ? 1 : 0)), fmt(billedReads(commissions.ops)), fmt(5 * M), fmt(writes(commissions.ops))]);
      checks.push(`commissions job spans ${fmt(G)} tier counters (campaign x affiliate x month) and ${fmt(pageQueries)} page queries of 500`);
    }

    // ---- contention probe (last: it may leave conversions pending and transactions running) ---------------------------
    if (flags.probePending > 0) {
      progress(`Contention probe: seeding ${fmt(flags.probePending)} pending conversions spread over every (campaign, affiliate) pair…`);
      await step(bulkWrite(seedDb, conversionDocs(seedDb, plan, { kind: 'pending', count: flags.probePending, tag: 'probe' }), { signal }));
      // First, outside the product code and before the job's sweep (whose abandoned workers may keep running): the same
      // transaction shape 16 at a time, reading the ledger entry with a query (as applyTransition does) or by its id.
      const isolation = async (viaQuery: boolean) => {
        const n = 32;
        const name = (c: string) => `orgs/${plan.orgId}/benchIsolation${viaQuery ? 'Query' : 'Id'}_${c}`;
        const docs = function* (): Generator<[FirebaseFirestore.DocumentReference, Record<string, unknown>]> {
          for (let i = 0; i < n; i++) {
            yield [seedDb.collection(name('conversions')).doc(`c${i}`), { id: `c${i}`, status: 'pending' }];
            yield [seedDb.collection(name('ledger')).doc(`l${i}`), { id: `l${i}`, conversionId: `c${i}`, status: 'pending' }];
          }
        };
        await step(bulkWrite(seedDb, docs(), { signal }));
        take();
        let next = 0;
        let failedTx = 0;
        const started = performance.now();
        await step(Promise.all(Array.from({ length: 16 }, async () => {
          for (let i = next++; i < n; i = next++) {
            const conv = db.collection(name('conversions')).doc(`c${i}`);
            const entry = db.collection(name('ledger')).doc(`l${i}`);
            try {
              await db.runTransaction(async (tx) => {
                if (viaQuery) {
                  await tx.get(conv);
                  for (const d of (await tx.get(db.collection(name('ledger')).where('conversionId', '==', `c${i}`))).docs) tx.update(d.ref, { status: 'approved' });
                } else {
                  await tx.getAll(conv, entry);
                  tx.update(entry, { status: 'approved' });
                }
                tx.update(conv, { status: 'approved' });
                tx.create(db.collection(name('auditLog')).doc(`a${i}`), { action: 'conversion.approve' });
              });
            } catch {
              failedTx++;
            }
          }
        })));
        const ops = take();
        return `${n} transactions ${viaQuery ? 'querying the ledger by conversionId' : 'reading the entry by id (getAll) '} in ${secs(performance.now() - started)} s, ` +
          `${fmt(codeCount(ops, 10))} ABORTED RPCs, ${fmt(failedTx)} failed after the client's retries, ${fmt(rpcCount(ops))} RPCs`;
      };
      progress('Contention probe: isolation experiment (not product code), 2 x 32 transactions 16 at a time…');
      const isolated = [await isolation(true), await isolation(false)];

      const before = await pendingLeft();
      const log: string[] = [];
      take();
      progress(`Contention probe: ${flags.probeSweeps} sweep(s) of the job over ${fmt(before)} pending conversions…`);
      const started = performance.now();
      await step(sweepJob(flags.probeSweeps, log));
      const ms = performance.now() - started;
      const ops = take();
      const after = await pendingLeft();
      probe = { label: 'contention probe', units: Math.max(before - after, 1), ms, ops };
      checks.push(
        `contention probe: ${fmt(before)} pending conversions spread over ${fmt(Math.min(flags.probePending, flags.affiliates * flags.campaigns))} pairs; ${fmt(before - after)} approved in ${secs(ms)} s ` +
          `(${(((before - after) / ms) * 1000).toFixed(1)}/s), ${fmt(codeCount(ops, 10))} ABORTED RPCs, ${fmt(ops.methods.get('Rollback')?.calls ?? 0)} rollbacks`,
        ...log.map((l) => `  ${l}`),
        'contention isolation (NOT product code: the job\'s transaction shape, get conversion + ledger entry, update both, create an audit',
        '  record, 16 at a time on fresh collections):',
        ...isolated.map((l) => `  ${l}`),
      );
    }

    // ---- report -------------------------------------------------------------------------------------------------------
    const out: string[] = [];
    const cpu = cpus();
    out.push(
      '',
      'Money paths on the Firestore emulator: payout run and commissions job, called in-process',
      `node ${process.version} on ${osType()} ${release()} (${process.arch}), ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM; ${emulatorVersion()}`,
      `load average at start ${loadAtStart}, at end ${loadavg().map((l) => l.toFixed(2)).join(' ')} (the cores are shared with the emulator and anything else running)`,
      `sizes: ${fmt(flags.affiliates)} affiliates (minimumPayout ${minimumPayout}, payable), ${fmt(flags.conversions)} approved conversions (CPA ${cpaPayout} USD cents, ` +
        `${(flags.conversions / flags.affiliates).toFixed(1)} per affiliate), ` +
        (flags.pending ? `${fmt(flags.pending)} pending conversions in ${fmt(flags.pendingGroups)} (campaign, affiliate) group(s), ` : 'no pending conversions, ') +
        `${flags.campaigns} campaigns, one org; payout provider: ${provider.kind}`,
      `seeding (direct to the emulator, one BulkWriter with throttling OFF; it otherwise starts at 500 writes/s): ${fmt(seeded.docs)} docs in ${secs(seeded.ms)} s = ${fmt(seeded.docs / (seeded.ms / 1000))} docs/s`,
      '',
      'Firestore operations are counted on the wire: the code under test talks to the emulator through a gRPC relay',
      '(scripts/bench/lib/money-grpc-counter.ts) that decodes the Firestore protobufs it forwards. docs read = documents returned by',
      'BatchGetDocuments and RunQuery; missing = lookups of documents that do not exist; empty q = queries that returned nothing; billed',
      'reads = the three together (Firestore bills a missing lookup and an empty query as one read each); writes = the writes of successful',
      'Commits and successful BatchWrite entries. Measured, not estimated: retries and failed transactions show up (ABORTED).',
      '"in flight" = time-weighted mean of RPCs open at once (1.00 = one after another; below 1, the process itself is busy between RPCs);',
      '"max" = most RPCs open at once.',
      `relay overhead, same run, 5 interleaved rounds of 100 serial single-document gets: median ${per(getDirect)} ms direct, ${per(getRelayed)} ms relayed, ` +
        `median per-round difference +${per(relayMs)} ms per serial RPC; BulkWriter ${fmt(calN)} docs: ${fmt(calN / (bwDirect.ms / 1000))} docs/s direct vs ${fmt(calN / (bwRelayed.ms / 1000))} relayed.`,
      'The phases and the baselines all go through the relay.',
      '',
      phaseTable(phases.concat(probe ? [probe] : [])),
      '',
      'units: conversions for the payout and commissions phases (for the probe: conversions it approved), documents written for the',
      'baselines. heap MiB = peak heapUsed above the level after a gc at the start of the phase (sampled every 25 ms).',
    );
    const odd = phases.concat(probe ? [probe] : []).filter((p) => p.ops.writesNotApplied || p.ops.undecoded);
    if (odd.length) out.push(`not in the counts above: ${odd.map((p) => `${p.label}: ${fmt(p.ops.writesNotApplied)} writes sent in commits that failed, ${fmt(p.ops.undecoded)} undecodable messages`).join('; ')}`);
    const ratios: string[][] = [];
    const row = (label: string, p: Phase, base: Phase) => {
      const b = base.ms / base.units;
      return [label, `${per(p.ms / p.units)} ms`, `${per(b)} ms`, ratio(p.ms / p.units / b), writes(p.ops) ? fmt(writes(p.ops) / (p.ms / 1000)) : '-', fmt(writes(base.ops) / (base.ms / 1000)), writes(p.ops) ? ratio(writes(p.ops) / p.ms / (writes(base.ops) / base.ms)) : '-'];
    };
    if (payoutRun && payoutBase) ratios.push(row('payout run', payoutRun, payoutBase));
    if (dryRun && payoutBase) ratios.push(row('payout dry run', dryRun, payoutBase));
    if (commissions && commissionsBase) ratios.push(row(`commissions job${commissionsCompleted ? '' : ' (did not complete)'}`, commissions, commissionsBase));
    if (ratios.length) out.push('', 'against the BulkWriter baseline of the same number of documents, measured just before each phase:', table(['phase', 'time/conversion', 'baseline time/doc', 'ratio', 'writes/s', 'baseline writes/s', 'writes/s ratio'], ratios));
    const measuredPhases = phases.filter((p) => !p.label.startsWith('baseline')).concat(probe ? [probe] : []);
    out.push('', 'by collection:', collectionTable(measuredPhases));
    out.push('', 'by RPC (sum/wall above 100% means calls overlapped):', methodTable(measuredPhases));
    if (expected.length) {
      out.push(
        '',
        'measured vs derived from the code path (no contention; N approved entries, A affiliates with entries, P payouts, E entries claimed,',
        'M pending conversions):',
        '  dry run  billed reads N + A                                                    writes 0',
        '  run      billed reads (N + A + 3E + 6P + 1) + (P + 3 missing) + (3 empty queries)    writes 3E + 4P + 4',
        '           (E: claimed, then read again with its conversion when the transfer is recorded; 6P: the payout read in its claim,',
        '           its summary, the lease checked in the claim, when marked claimed and before sending, the payout read again when',
        '           its transfer is recorded; +1 read and +1 write per further claim chunk of 400 entries of one payout: none here)',
        '  job      billed reads 6M: page queries, the conversion, its affiliate\'s status, its commission entry (by id), the tier counter',
        '           (found or missing), the analytics sweep\'s query of due versions; +1 empty page query when M is a multiple of 500',
        '           writes 5M: the conversion, its entry, the tier counter, the audit record, the due mark cleared once published',
        table(['phase', 'billed reads (code)', 'billed reads (measured)', 'writes (code)', 'writes (measured)'], expected),
      );
    }
    out.push('', 'checks:', ...checks.map((c) => `  ${c}`));

    // ---- extrapolation ------------------------------------------------------------------------------------------------
    const ex: string[] = [
      '',
      'EXTRAPOLATION to the full sizes (from this run; not measured). The emulator scans a whole collection per query: an equality query',
      `took ${per(scan.small)} ms on the ${flags.campaigns}-document campaigns collection and ${per(scan.ledger)} ms on the ${fmt(ledgerDocs)}-entry ledger (median of 9, uncounted client),`,
      `i.e. ~${(scan.perDocMs * 1000).toFixed(2)} us per document scanned, ~${fmt(scan.at(fullLedgerDocs))} ms per query at ${fmt(fullLedgerDocs)} entries. Production Firestore serves these from indexes.`,
    ];
    if (payoutRun && dryRun) {
      const byConv = payoutRun.ms * (full.conversions / flags.conversions);
      const byAff = payoutRun.ms * (full.affiliates / flags.affiliates);
      const E = full.conversions;
      const P = full.affiliates;
      ex.push(
        `  payout run, ${fmt(full.affiliates)} affiliates / ${fmt(full.conversions)} conversions: ~${fmt(byConv / 1000)} s linearly (scaled by conversions)` +
          (Math.abs(byAff - byConv) / byConv > 0.05 ? `, ~${fmt(byAff / 1000)} s (scaled by affiliates; this run's ratio differs from the full size's 20:1)` : '') +
          `; ~${fmt(emulatorFull(payoutRun, full.conversions / flags.conversions) / 1000)} s on this emulator with its queries costed at a ${fmt(fullLedgerDocs)}-entry ledger`,
        `    Firestore ops from the code-path formula: ${fmt(runReads(E, P, E, P))} billed reads, ${fmt(3 * E + 4 * P + 4)} writes`,
        `  payout dry run: ~${fmt((dryRun.ms * full.conversions) / flags.conversions / 1000)} s`,
      );
    }
    if (retained) {
      const perEntry = retained.bytes / retained.entries;
      ex.push(
        `  memory: the run loads every approved entry of the org with one query and keeps snapshot and data while planning. Retained heap,`,
        `    measured after a gc on ${fmt(retained.entries)} entries of the same query: ${fmt(perEntry)} bytes/entry -> ~${mib(perEntry * full.conversions)} MiB at ${fmt(full.conversions)} entries`,
        `    (payoutsJob has 512 MiB in infra/functions.ts; peak heapUsed above start in this run: dry run ${mib(dryRun?.heapPeak ?? 0)} MiB, run ${mib(payoutRun?.heapPeak ?? 0)} MiB, garbage included)`,
      );
    }
    if (commissions) {
      ex.push(
        `  commissions job, ${fmt(full.pending)} pending in ${fmt(flags.pendingGroups)} group(s): ~${fmt((commissions.ms * full.pending) / flags.pending / 1000)} s linearly, ` +
          `~${fmt(emulatorFull(commissions, full.pending / flags.pending) / 1000)} s on this emulator with its queries costed at a ${fmt(fullLedgerDocs)}-entry ledger` +
          `${commissionsCompleted ? '' : ' (from a run that did not complete: meaningless)'}`,
        `    Firestore ops from the code-path formula: ${fmt(6 * full.pending)} billed reads, ${fmt(5 * full.pending)} writes`,
      );
    }
    if (flags.conversions === full.conversions && flags.affiliates === full.affiliates) ex.push('  (the payout figures in the tables above are this run\'s own measurements at the full size)');
    if (flags.pending === full.pending) ex.push('  (the commissions figures in the tables above are this run\'s own measurements at the full size)');
    out.push(...ex);

    // ---- model --------------------------------------------------------------------------------------------------------
    const model: string[] = [
      '',
      `MODEL, not a measurement: production time at the full sizes if every Firestore round trip took ${flags.prodRpcMs} ms (--prod-rpc-ms) and`,
      'nothing else took time, = RPCs / RPCs in flight x round trip (the chain of round trips one after another):',
    ];
    if (payoutRun) {
      const perPayout = rpcCount(payoutRun.ops) / Math.max(payouts, 1);
      const t = perPayout * full.affiliates * flags.prodRpcMs; // one payout after another: one RPC in flight
      model.push(`  payout run: ${perPayout.toFixed(1)} RPCs per payout, one after another (measured in flight ${payoutRun.ops.meanInFlight.toFixed(2)}) -> ~${fmt(t / 1000)} s for ${fmt(full.affiliates)} payouts;`);
      model.push('    the run holds a 15-minute (900 s) lease (payout-runs.ts leaseMs) and payoutsJob may run 1,800 s (infra/functions.ts)');
    }
    if (commissions && commissionsCompleted) {
      const perConv = rpcCount(commissions.ops) / flags.pending;
      const serial = perConv * full.pending * flags.prodRpcMs;
      model.push(
        `  commissions job: ${perConv.toFixed(2)} RPCs per conversion -> ~${fmt(serial / 1000)} s when the conversions are in one (campaign, affiliate) group (run one after another, as measured),`,
        `    ~${fmt(serial / 16 / 1000)} s if spread over 16+ groups and 16 transactions proceed in parallel without contention (commissionsJob may run 840 s)`,
      );
    }
    out.push(...model);
    const serialRpcs = (p: Phase) => rpcCount(p.ops) / Math.max(p.ops.meanInFlight, 1);
    out.push(
      '',
      'notes:',
      '  - The Firestore emulator is far slower than production Firestore and here shares the machine\'s cores with this process; absolute times',
      '    are emulator times. Compare ratios and operation counts between runs; do not read them as production figures.',
      `  - Relay overhead in the phases, ESTIMATED as RPCs one after another x ${per(relayMs)} ms: ` +
        [payoutRun && `payout run ~${secs(serialRpcs(payoutRun) * relayMs)} s of ${secs(payoutRun.ms)} s`, commissions && `commissions job ~${secs(serialRpcs(commissions) * relayMs)} s of ${secs(commissions.ms)} s`]
          .filter(Boolean)
          .join('; ') + '.',
      '  - Operation counts do not depend on the emulator: they follow from the code path and the data, and match the derivation above.',
      '  - The emulator takes coarse locks for a query inside a transaction, so transactions that each query the ledger and then write to it',
      `    deadlock until its lock timeout (ABORTED "Transaction lock timeout") when run in parallel${probe ? ': see the contention probe' : ' (--probe-pending shows it)'}.`,
      '  - Seed data: conversions and ledger entries exactly as applyPostback books them and applyTransition approves them; affiliates onboarded',
      '    as with the dry-run provider. CPA without volume tiers, so no tier adjustment entries. Seeding is not counted.',
    );
    console.log(out.join('\n'));
    return 0;
  } catch (err) {
    failed = true;
    return failureCode(err, signal);
  } finally {
    // Work still in flight (after a failure, a sweep that threw, or Ctrl-C) fails once the emulator and clients are gone.
    process.on('unhandledRejection', () => undefined);
    // The emulator first: after Ctrl-C the code under test may still be waiting on it.
    await emulator?.stop().catch(() => undefined);
    await pubsubEmulator?.stop().catch(() => undefined);
    const quietly = (p: Promise<unknown> | undefined) => Promise.race([p?.catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
    await quietly(closeProduct?.());
    await quietly(closePublisher?.());
    await quietly(direct?.terminate());
    await quietly(proxy?.close());
    if (failed && !signal.aborted) progress(`Emulator log kept in ${join(dataDir, 'logs')}`);
    else rmSync(dataDir, { recursive: true, force: true });
    progress(`Stopped the emulators (${((Date.now() - t0) / 1000).toFixed(0)} s in all).`);
  }
}

runMain(parse, usage, main);
