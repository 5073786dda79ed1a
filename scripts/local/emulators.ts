import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

/**
 * Runs the real Google emulators as children. Each gets its own process group because the `gcloud`
 * wrapper leaves its Java child running when only the wrapper is killed: we signal the whole group, then
 * wait until the port is free again.
 */
export interface RunningEmulator {
  name: 'pubsub' | 'firestore';
  hostPort: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(true));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(200);
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function answersOk(hostPort: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${hostPort}/`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  } catch {
    return false;
  }
}

/**
 * The process groups of the emulators this process started and has not stopped. They run in groups of their own, so
 * that Ctrl-C reaches only this process, which then stops them in order; should it die instead (an uncaught error, a
 * rejection nobody handled), they would outlive it with their ports taken. Its last act kills them.
 */
const runningGroups = new Set<number>();
let exitHookInstalled = false;
function killGroupsOnExit(pid: number): void {
  runningGroups.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const group of runningGroups) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
  });
}

/** The emulator could not bind its port: something else took it (between our check and its start, or before). */
export class EmulatorPortTaken extends Error {}

/**
 * What the emulator's own log says once it serves on `port`. A 200 on the port is not enough: a process that took
 * the port between our check and the emulator's start answers too, while the Pub/Sub emulator, unable to bind,
 * hangs on instead of exiting.
 */
function startedOn(name: 'pubsub' | 'firestore', port: number, log: string): boolean {
  return name === 'pubsub'
    ? log.includes(`Server started, listening on ${port}\n`)
    : log.includes(`API endpoint: http://127.0.0.1:${port}\n`) && log.includes('Dev App Server is now running.');
}

/**
 * `port`: a number to use that one (a clear error if it is taken), or 'any' for a free one, chosen again should
 * another process take it before the emulator binds it (parallel CI jobs do).
 */
export async function startEmulator(name: 'pubsub' | 'firestore', port: number | 'any', opts: { project: string; logDir: string }): Promise<RunningEmulator> {
  if (port !== 'any') return startEmulatorOn(name, port, opts);
  return onAFreePort((free) => startEmulatorOn(name, free, opts));
}

/** Starts something on a free port, on another should the port be taken before it binds it (three tries). */
export async function onAFreePort<T>(start: (port: number) => Promise<T>, pick: () => Promise<number> = freePort): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await pick());
    } catch (err) {
      if (!(err instanceof EmulatorPortTaken) || attempt === 3) throw err;
    }
  }
}

async function startEmulatorOn(name: 'pubsub' | 'firestore', port: number, opts: { project: string; logDir: string }): Promise<RunningEmulator> {
  const hostPort = `127.0.0.1:${port}`;
  const taken = () => new EmulatorPortTaken(`Port ${port} for the ${name} emulator is already in use (an emulator left running?). Stop it, or choose another port with ${name === 'pubsub' ? 'PUBSUB' : 'FIRESTORE'}_EMULATOR_PORT.`);
  if (await portInUse(port)) throw taken();
  mkdirSync(opts.logDir, { recursive: true });
  const logPath = join(opts.logDir, `${name}-emulator.log`);
  const log = openSync(logPath, 'w');
  const args = name === 'pubsub'
    ? ['beta', 'emulators', 'pubsub', 'start', `--host-port=${hostPort}`, `--project=${opts.project}`, '--quiet']
    : ['emulators', 'firestore', 'start', `--host-port=${hostPort}`, '--quiet'];
  const child: ChildProcess = spawn('gcloud', args, { detached: true, stdio: ['ignore', log, log], env: { ...process.env, CLOUDSDK_CORE_DISABLE_PROMPTS: '1' } });
  if (child.pid !== undefined) killGroupsOnExit(child.pid);
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', () => (exited = true));
  const groupAlive = () => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  // Done only when the whole group (the Java child too) is gone: a freed main port is not enough, the
  // Firestore emulator keeps other ports open for a few seconds after it. Its port only once it had bound it:
  // one that could not, because another process holds the port, leaves that process be.
  let bound = false;
  const stop = async () => {
    if (child.pid === undefined) return;
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        /* group already gone */
      }
      try {
        await waitUntil(async () => !groupAlive() && !(bound && (await portInUse(port))), signal === 'SIGTERM' ? 5000 : 10000, `${name} emulator to stop`);
        break;
      } catch {
        /* escalate */
      }
    }
    // Only now: a group that would not stop is still killed when this process exits.
    if (!groupAlive()) runningGroups.delete(child.pid);
  };
  try {
    await waitUntil(async () => {
      const said = readFileSync(logPath, 'utf8');
      if (said.includes('java.net.BindException')) throw taken();
      if (exited) throw new Error(`The ${name} emulator exited during start-up; see ${logPath}`);
      bound ||= startedOn(name, port, said);
      return bound && answersOk(hostPort);
    }, 60_000, `the ${name} emulator on ${hostPort}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { name, hostPort, stop };
}

/** Starts both emulators (in parallel) and points this process's Google clients at them. */
export async function startEmulators(opts: { pubsubPort: number | 'any'; firestorePort: number | 'any'; project: string; logDir: string }): Promise<RunningEmulator[]> {
  const results = await Promise.allSettled([
    startEmulator('pubsub', opts.pubsubPort, opts),
    startEmulator('firestore', opts.firestorePort, opts),
  ]);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((e) => e.stop()));
    throw failed.reason;
  }
  for (const e of started) process.env[e.name === 'pubsub' ? 'PUBSUB_EMULATOR_HOST' : 'FIRESTORE_EMULATOR_HOST'] = e.hostPort;
  return started;
}
