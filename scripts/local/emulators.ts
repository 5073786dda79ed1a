import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, mkdirSync } from 'node:fs';
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

export async function startEmulator(name: 'pubsub' | 'firestore', port: number, opts: { project: string; logDir: string }): Promise<RunningEmulator> {
  const hostPort = `127.0.0.1:${port}`;
  if (await portInUse(port)) {
    throw new Error(`Port ${port} for the ${name} emulator is already in use (an emulator left running?). Stop it, or choose another port with ${name === 'pubsub' ? 'PUBSUB' : 'FIRESTORE'}_EMULATOR_PORT.`);
  }
  mkdirSync(opts.logDir, { recursive: true });
  const log = openSync(join(opts.logDir, `${name}-emulator.log`), 'w');
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
  // Firestore emulator keeps other ports open for a few seconds after it.
  const stop = async () => {
    if (child.pid === undefined) return;
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        /* group already gone */
      }
      try {
        await waitUntil(async () => !groupAlive() && !(await portInUse(port)), signal === 'SIGTERM' ? 5000 : 10000, `${name} emulator to stop`);
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
      if (exited) throw new Error(`The ${name} emulator exited during start-up; see ${join(opts.logDir, `${name}-emulator.log`)}`);
      return answersOk(hostPort);
    }, 60_000, `the ${name} emulator on ${hostPort}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { name, hostPort, stop };
}

/** Starts both emulators (in parallel) and points this process's Google clients at them. */
export async function startEmulators(opts: { pubsubPort: number; firestorePort: number; project: string; logDir: string }): Promise<RunningEmulator[]> {
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
