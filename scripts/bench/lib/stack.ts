import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startEmulators, type RunningEmulator } from '../../local/emulators';
import type { LocalStack } from '../../local/stack';
import { exitCodes, type StopSignal } from '../../local/signals';
import { commandName, pidsWithArg } from './cpu';

/**
 * The real local stack for a benchmark: both emulators on free ports (so a running `npm start` is never
 * disturbed), a project and a data directory of its own, and every function behind one base URL, served
 * from this process. `stop()` leaves no emulator process or port behind.
 */
export interface BenchStack {
  baseUrl: string;
  project: string;
  dataDir: string;
  /**
   * The emulators' processes now (the gcloud wrapper and the JVM it starts, in a process group of their own),
   * found by the port on their command line; `java` lists only the JVMs, which do the work.
   */
  emulatorProcesses(): { name: 'pubsub' | 'firestore'; pids: number[]; java: number[] }[];
  /** A bearer token from the local stand-in for Supabase Auth; the same email is always the same user. */
  token(email: string): string;
  request(method: string, path: string, opts?: { token?: string; body?: unknown; signal?: AbortSignal }): Promise<{ status: number; text: string }>;
  /** Idempotent. With keepLogs the data directory (emulator logs under logs/) is kept and its path returned. */
  stop(opts?: { keepLogs?: boolean }): Promise<string | undefined>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How an emulator's processes name their port: the gcloud wrapper as --host-port, the JVM as --port. */
const portArgs = (port: number) => [`--port=${port}`, `--host-port=127.0.0.1:${port}`];

/**
 * The emulators' stop() returns once the main port is free, but the JVM may linger a moment longer with its
 * other ports open. Wait (never kill) until no process still carries one of our ports on its command line.
 */
async function waitForEmulatorProcesses(ports: number[], timeoutMs = 15_000): Promise<void> {
  if (!existsSync('/proc/self/cmdline')) return;
  const marks = ports.flatMap((p) => portArgs(p));
  const deadline = Date.now() + timeoutMs;
  while (pidsWithArg(marks).length && Date.now() < deadline) await sleep(100);
}

const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

export async function startBenchStack(opts: { signal?: AbortSignal; env?: Record<string, string> } = {}): Promise<BenchStack> {
  // The stack reads its configuration from the environment at first use: set it all before loading it.
  const dataDir = mkdtempSync(join(tmpdir(), 'abp-bench-'));
  const project = `abp-bench-${randomBytes(4).toString('hex')}`;
  Object.assign(process.env, {
    GOOGLE_CLOUD_PROJECT: project,
    ABP_DATA_DIR: dataDir,
    ABP_ENV: 'local',
    METADATA_SERVER_DETECTION: 'none',
    PORT: String(await freePort()),
  });
  delete process.env.SUPABASE_URL; // tokens come from the local stand-in for Supabase Auth
  delete process.env.PUBLIC_BASE_URL;
  Object.assign(process.env, opts.env);

  let emulators: RunningEmulator[] = [];
  let stack: LocalStack | undefined;
  let stopped: Promise<string | undefined> | undefined;
  const stop = (o: { keepLogs?: boolean } = {}) =>
    (stopped ??= (async () => {
      await stack?.close().catch(() => undefined);
      await Promise.all(emulators.map((e) => e.stop()));
      await waitForEmulatorProcesses(emulators.map((e) => portOf(e.hostPort)));
      if (o.keepLogs) return dataDir;
      rmSync(dataDir, { recursive: true, force: true });
      return undefined;
    })());

  try {
    emulators = await startEmulators({ pubsubPort: 'any', firestorePort: 'any', project, logDir: join(dataDir, 'logs') });
    opts.signal?.throwIfAborted();
    const { startLocalStack } = await import('../../local/stack');
    stack = await startLocalStack();
    opts.signal?.throwIfAborted();
  } catch (err) {
    const kept = await stop({ keepLogs: !opts.signal?.aborted });
    if (kept && err instanceof Error) err.message += ` (emulator logs kept in ${join(kept, 'logs')})`;
    throw err;
  }
  const { mintDevToken } = await import('../../../functions/adapters/dev-identity');
  const baseUrl = stack.baseUrl;
  return {
    baseUrl,
    project,
    dataDir,
    emulatorProcesses: () =>
      emulators.map(({ name, hostPort }) => {
        const pids = pidsWithArg(portArgs(portOf(hostPort)));
        return { name, pids, java: pids.filter((pid) => commandName(pid) === 'java') };
      }),
    token: (email) => mintDevToken(email),
    request: async (method, path, o = {}) => {
      const headers: Record<string, string> = {};
      if (o.token) headers.authorization = `Bearer ${o.token}`;
      if (o.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${baseUrl}${path}`, { method, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body), signal: o.signal ?? null });
      return { status: res.status, text: await res.text() };
    },
    stop,
  };
}

/**
 * SIGINT/SIGTERM abort the returned signal instead of killing the process, so that the caller's finally
 * block can stop the emulators (they run in process groups of their own: the terminal's Ctrl-C never
 * reaches them). Pass the signal to runLoad and startBenchStack, and check it between steps.
 */
export function abortOnSignals(log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): AbortSignal {
  const controller = new AbortController();
  let first = 0;
  const onSignal = (signal: StopSignal) => {
    if (controller.signal.aborted) {
      // One Ctrl-C often arrives twice (from the terminal and relayed by npm/tsx): only a later one is news, and
      // exits at once (the exit hook of scripts/local/emulators.ts still kills the emulators' groups).
      if (Date.now() - first > 1000) process.exit(exitCodes[signal]);
      return;
    }
    first = Date.now();
    log(`\n${signal}: stopping the stack and the emulators… (again to stop at once)`);
    controller.abort(new Error(`Interrupted by ${signal}`));
  };
  // The signals npm start and npm test stop on, SIGHUP included: a closed terminal must not leave the emulators running.
  for (const signal of Object.keys(exitCodes) as StopSignal[]) process.on(signal, () => onSignal(signal));
  return controller.signal;
}

/**
 * The last step of a benchmark on the stack, for its finally block: stops the stack, keeps the emulator logs
 * only when the run failed (after Ctrl-C they explain nothing) and says where they are and how long it all took.
 */
export async function stopBenchStackAndReport(
  stack: BenchStack | undefined,
  o: { failed: boolean; signal: AbortSignal; started: number; log: (msg: string) => void },
): Promise<void> {
  const kept = await stack?.stop({ keepLogs: o.failed && !o.signal.aborted });
  if (kept) o.log(`Emulator logs kept in ${join(kept, 'logs')}`);
  o.log(`Stopped the stack and the emulators (${((Date.now() - o.started) / 1000).toFixed(0)} s in all).`);
}
