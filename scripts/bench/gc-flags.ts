/**
 * Benchmark of the node flags a one-vCPU function runs with (shared/runtime-flags.ts, set as NODE_OPTIONS by
 * infra/): a bare Functions Framework redirect, served from a child process pinned to one core like a
 * one-vCPU instance, under closed-loop load from this process on the other cores; once with node's defaults
 * (the baseline) and once with the flags, in alternating rounds, pooled. Prints req/s and latency percentiles
 * and the flags' run as multiples of the baseline. Needs taskset (util-linux) and 2 or more cores to pin.
 *
 *   npx tsx scripts/bench/gc-flags.ts [--connections 50] [--duration 8] [--warmup 1] [--rounds 2]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { oneVcpuNodeOptions } from '../../shared/runtime-flags';
import { failureCode, parseFlags, runMain } from './lib/cli';
import { formatCpuList, hasTaskset, pinProcess, usableCores } from './lib/cpu';
import { mergeResults, runLoad, type LoadResult } from './lib/load';
import { abortOnSignals } from './lib/stack';
import { environmentLines, ratioTable, resultsTable, type Scenario } from './lib/report';

const usage = `usage: npx tsx scripts/bench/gc-flags.ts [options]
  --connections N   concurrent keep-alive connections (default 50, as the tracking benchmark's clicks)
  --duration S      measured seconds per scenario and round (default 8)
  --warmup S        unmeasured seconds of load after each server starts (default 1)
  --rounds N        rounds of both scenarios, alternating, pooled (default 2)`;

interface Flags {
  connections: number;
  duration: number;
  warmup: number;
  rounds: number;
}

const parse = (argv: string[]): Flags =>
  parseFlags(argv, usage, {
    connections: { default: 50, min: 1, max: 1000 },
    duration: { default: 8, min: 1, max: 600 },
    warmup: { default: 1, min: 0, max: 600 },
    rounds: { default: 2, min: 1, max: 20 },
  });

// The server, as plain CommonJS for `node -e`: the same registration and test server the tracking benchmark's B uses.
const serverSource = `
const ff = require('@google-cloud/functions-framework');
const { getTestServer } = require('@google-cloud/functions-framework/testing');
ff.http('bareRedirect', (_req, res) => res.redirect(302, 'https://shop.example.com/landing'));
const server = getTestServer('bareRedirect');
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
`;

async function startServer(nodeFlags: readonly string[], core: number): Promise<{ url: string; child: ChildProcess }> {
  // Through NODE_OPTIONS, as infra/ gives them: a flag NODE_OPTIONS does not take stops the server here, as it would every function.
  const env = { ...process.env, NODE_OPTIONS: [process.env.NODE_OPTIONS ?? '', ...nodeFlags].join(' ').trim() };
  const child = spawn('taskset', ['--cpu-list', String(core), process.execPath, '-e', serverSource], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], cwd: process.cwd(), env });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`the server exited (code ${code}) before listening`)));
  });
  return { url: `http://127.0.0.1:${port}/c/bench?sub1=bench`, child };
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

async function main(flags: Flags): Promise<number> {
  const signal = abortOnSignals((m) => console.error(m));
  const cores = usableCores();
  if (!hasTaskset() || cores.length < 2) {
    console.error('gc-flags needs taskset and at least 2 usable cores (the server on one, the load on the rest).');
    return 1;
  }
  const serverCore = cores[cores.length - 1]!;
  // This process (the load generator's thread) stays off the server's core.
  await pinProcess(process.pid, cores.slice(0, -1));
  const variants = [
    { label: 'A  node defaults', flags: [] as readonly string[] },
    { label: `B  ${oneVcpuNodeOptions.join(' ')}`, flags: oneVcpuNodeOptions },
  ];
  const runs: LoadResult[][] = variants.map(() => []);
  try {
    for (let round = 0; round < flags.rounds; round++) {
      for (const [i, v] of variants.entries()) {
        const server = await startServer(v.flags, serverCore);
        try {
          if (flags.warmup > 0) await runLoad({ url: server.url, connections: flags.connections, durationSeconds: flags.warmup, signal });
          console.error(`  round ${round + 1}/${flags.rounds}: ${v.label}`);
          runs[i]!.push(await runLoad({ url: server.url, connections: flags.connections, durationSeconds: flags.duration, signal }));
        } finally {
          await stopServer(server.child);
        }
      }
    }
  } catch (err) {
    return failureCode(err, signal);
  }
  const scenarios: Scenario[] = variants.map((v, i) => ({ label: v.label, result: mergeResults(runs[i]!) }));
  console.log(
    [
      'Node flags of a one-vCPU function: a bare Functions Framework redirect (GET, 302), served on one pinned core',
      ...environmentLines(),
      `load: autocannon, ${flags.connections} connections, keep-alive, ${flags.rounds} x ${flags.duration} s per scenario (pooled), each round on a fresh server`,
      `server core: ${serverCore}; load generator: cores ${formatCpuList(cores.slice(0, -1))}`,
      '(non-2xx counts the 302s: every answer is a redirect)',
      '',
      resultsTable(scenarios),
      '',
      'as multiples of A (node defaults):',
      ratioTable(scenarios.slice(1), scenarios[0]!),
    ].join('\n'),
  );
  return 0;
}

runMain(parse, usage, main);
