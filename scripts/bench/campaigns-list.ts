/**
 * Benchmark of `GET /v1/orgs/{orgId}/campaigns` against the real local stack (the code `npm start` runs, on
 * the real Pub/Sub and Firestore emulators, started here on free ports). Quotes the endpoint as multiples of
 * two baselines measured in the same run with the same load settings:
 *   A  a bare node:http server answering the very same JSON body (the floor of this process and machine);
 *   B  GET /healthz through the same local gateway (no auth, no Firestore, no Functions Framework).
 * Prints figures only; it never asserts timings.
 *
 *   npx tsx scripts/bench/campaigns-list.ts [--connections 10] [--duration 10] [--warmup 2] [--rounds 1] [--campaigns 50] [--limit 50]
 */
import { startBareServer, type BareServer } from './lib/bare-server';
import { failureCode, parseFlags, runMain } from './lib/cli';
import { mergeResults, runLoad, type LoadResult } from './lib/load';
import { abortOnSignals, startBenchStack, stopBenchStackAndReport, type BenchStack } from './lib/stack';
import { environmentLines, ms, rate, ratioTable, resultsTable, unexpectedStatuses, type Scenario } from './lib/report';

const usage = `usage: npx tsx scripts/bench/campaigns-list.ts [options]
  --connections N   concurrent keep-alive connections, one request in flight each (default 10)
  --duration S      measured seconds per scenario and round (default 10)
  --warmup S        unmeasured seconds of load before each scenario's first round (default 2; 0 to skip)
  --rounds N        measure A, B, C in turn N times and pool the samples (default 1)
  --campaigns N     campaigns to create in the benchmark org, 1..100 (default 50)
  --limit N         page size requested, 1..200 (default 50)`;

interface Flags {
  connections: number;
  duration: number;
  warmup: number;
  rounds: number;
  campaigns: number;
  limit: number;
}

const parse = (argv: string[]): Flags =>
  parseFlags(argv, usage, {
    connections: { default: 10, min: 1, max: 1000 },
    duration: { default: 10, min: 1, max: 600 },
    warmup: { default: 2, min: 0, max: 600 },
    rounds: { default: 1, min: 1, max: 20 },
    campaigns: { default: 50, min: 1, max: 100 }, // the professional plan's limit
    limit: { default: 50, min: 1, max: 200 },
  });

const progress = (msg: string) => process.stderr.write(`${msg}\n`);

async function main(flags: Flags): Promise<number> {
  const signal = abortOnSignals(progress);
  const started = Date.now();
  let stack: BenchStack | undefined;
  let bare: BareServer | undefined;
  let failed = false;
  try {
    progress('Starting the Pub/Sub and Firestore emulators on free ports, then the stack…');
    stack = await startBenchStack({ signal });
    const base = stack.baseUrl;

    progress(`Stack at ${base} (emulators: pubsub ${process.env.PUBSUB_EMULATOR_HOST}, firestore ${process.env.FIRESTORE_EMULATOR_HOST}); creating an org (professional plan) and ${flags.campaigns} campaigns…`);
    const token = stack.token('bench-owner@example.com');
    const org = await stack.request('POST', '/v1/orgs', { token, signal, body: { name: 'Benchmark Org', type: 'advertiser', plan: 'professional' } });
    if (org.status !== 201) throw new Error(`Creating the org failed: ${org.status} ${org.text}`);
    const orgId = (JSON.parse(org.text) as { id: string }).id;
    for (let i = 1; i <= flags.campaigns; i++) {
      const r = await stack.request('POST', `/v1/orgs/${orgId}/campaigns`, {
        token,
        signal,
        body: {
          name: `Benchmark campaign ${String(i).padStart(3, '0')}`,
          destinationUrl: `https://shop.example.com/landing/${i}?cid={click_id}&s1={sub1}&aff={affiliate_id}`,
          status: 'active',
          currency: 'USD',
          payout: { type: 'cpa', amount: 500 },
          revenue: { type: 'cpa', amount: 800 },
        },
      });
      if (r.status !== 201) throw new Error(`Creating campaign ${i} failed: ${r.status} ${r.text}`);
    }

    const listPath = `/v1/orgs/${orgId}/campaigns?limit=${flags.limit}`;
    const sample = await stack.request('GET', listPath, { token, signal });
    const items = sample.status === 200 ? (JSON.parse(sample.text) as { items: unknown[] }).items.length : -1;
    const expected = Math.min(flags.campaigns, flags.limit);
    if (items !== expected) throw new Error(`GET ${listPath} returned ${sample.status} with ${items} items, expected 200 with ${expected}: ${sample.text.slice(0, 300)}`);
    const healthBytes = Buffer.byteLength((await stack.request('GET', '/healthz', { signal })).text);
    bare = await startBareServer(sample.text);

    const scenarios: { key: string; label: string; url: string; headers: Record<string, string> }[] = [
      { key: 'A', label: 'A  bare node:http, same body', url: `${bare.url}${listPath}`, headers: {} },
      { key: 'B', label: 'B  gateway GET /healthz', url: `${base}/healthz`, headers: {} },
      { key: 'C', label: `C  GET campaigns?limit=${flags.limit}`, url: `${base}${listPath}`, headers: { authorization: `Bearer ${token}` } },
    ];
    const runs = new Map<string, LoadResult[]>(scenarios.map((s) => [s.key, []]));
    for (let round = 1; round <= flags.rounds; round++) {
      for (const s of scenarios) {
        if (round === 1 && flags.warmup > 0) {
          progress(`  warm-up  ${s.label} (${flags.warmup} s)`);
          await runLoad({ url: s.url, headers: s.headers, connections: flags.connections, durationSeconds: flags.warmup, signal });
        }
        progress(`  measure  ${s.label} (${flags.duration} s${flags.rounds > 1 ? `, round ${round}/${flags.rounds}` : ''})`);
        const r = await runLoad({ url: s.url, headers: s.headers, connections: flags.connections, durationSeconds: flags.duration, signal });
        runs.get(s.key)!.push(r);
      }
    }

    const results: Scenario[] = scenarios.map((s) => ({ label: s.label, result: mergeResults(runs.get(s.key)!) }));
    const [a, b] = results as [Scenario, Scenario, Scenario];
    const out: string[] = [];
    out.push(
      '',
      `GET /v1/orgs/{orgId}/campaigns?limit=${flags.limit} on the local stack: ${flags.connections} connections, ${flags.duration} s per scenario x ${flags.rounds} round(s), ${flags.warmup} s warm-up`,
      ...environmentLines(),
      `bodies: A and C ${Buffer.byteLength(sample.text)} bytes (${items} campaigns), B ${healthBytes} bytes`,
      '',
      resultsTable(results),
    );
    if (flags.rounds > 1) {
      out.push('', 'per round (req/s, p50 ms):');
      const width = Math.max(...scenarios.map((s) => s.label.length));
      for (const s of scenarios) out.push(`  ${s.label.padEnd(width)}  ${runs.get(s.key)!.map((r) => `${rate(r.requestsPerSec).padStart(6)} / ${ms(r.p50).padEnd(6)}`).join('  ').trimEnd()}`);
    }
    for (const { label, result } of results) {
      const odd = unexpectedStatuses(result);
      if (odd) out.push(`  ! ${label.trim()}: ${odd}`);
    }
    out.push('', 'as multiples of A (bare node:http):', ratioTable(results.slice(1), a));
    out.push('', 'as multiples of B (gateway /healthz):', ratioTable(results.slice(2), b));
    out.push(
      '',
      'notes:',
      '  - C verifies the ES256 token (JWKS cached), reads the membership document and runs the list query (limit+1 documents)',
      '    through the Functions Framework, all in this one Node process; A and B share the process and the load settings.',
      '  - The Firestore emulator is much slower than production Firestore (and here it shares the CPU cores with the server',
      '    and the load generator), so C\'s absolute figures are not production latencies. Compare ratios between runs on the',
      '    same machine; do not read them as production SLOs.',
      `  - A answers C's body (${Buffer.byteLength(sample.text)} bytes), B only ${healthBytes} bytes, so B can beat A: A is the floor for this response size,`,
      '    B the floor of the gateway path.',
      '  - Closed loop: req/s ~= connections / mean latency, so the req/s ratio mostly mirrors the latency ratio.',
    );
    console.log(out.join('\n'));
    return 0;
  } catch (err) {
    failed = true;
    return failureCode(err, signal);
  } finally {
    await bare?.close().catch(() => undefined);
    await stopBenchStackAndReport(stack, { failed, signal, started, log: progress });
  }
}

runMain(parse, usage, main);
