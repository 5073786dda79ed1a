import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { oneVcpuNodeOptions } from '../../../shared/runtime-flags';
import { formatCpuList } from './cpu';
import type { FromHitServer, HitServerCalls, HitServerMethod, ToHitServer } from './hit-protocol';

/**
 * Starts the hit server (hit-server.ts) as a child process and talks to it over Node's IPC channel. The child
 * runs on the same Node with the same TypeScript loader (tsx, resolved from this repository, so the working
 * directory does not matter) and inherits this process's environment: call it after the stack has set the
 * emulator hosts, project and data directory, and after the local secrets exist.
 *
 * With `cores`, the child starts under `taskset --cpu-list`, so that its first instruction already runs there.
 * `name` says which instance it is in errors (the tracking benchmark starts a second one for the state worker).
 * close() asks it to exit and kills it if it does not; should this process die first, the child sees its
 * IPC channel close and exits on its own, so no server is left behind.
 */
export interface HitServerProcess {
  pid: number;
  call<M extends HitServerMethod>(method: M, request: HitServerCalls[M]['request'], signal?: AbortSignal): Promise<HitServerCalls[M]['result']>;
  /** Idempotent; resolves once the child has exited. */
  close(): Promise<void>;
}

const repoRoot = join(__dirname, '../../..');

export async function startHitServer(
  opts: { cores?: readonly number[]; signal?: AbortSignal; startTimeoutMs?: number; name?: string; nodeArgs?: readonly string[] } = {},
): Promise<HitServerProcess> {
  opts.signal?.throwIfAborted();
  const name = opts.name ?? 'hit server';
  // The flags production gives a one-vCPU function (infra/ sets them as NODE_OPTIONS), then
  // ABP_BENCH_HIT_NODE_ARGS, added to the child only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile
  // the function under test (NODE_OPTIONS does not take --cpu-prof); `nodeArgs` replaces the latter.
  const extra = opts.nodeArgs ?? (process.env.ABP_BENCH_HIT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const node = [process.execPath, ...extra, '--import', pathToFileURL(require.resolve('tsx')).href, join(__dirname, 'hit-server.ts')];
  const [command, ...args] = opts.cores ? ['taskset', '--cpu-list', formatCpuList(opts.cores), ...node] : node;
  // The child's stdout goes to our stderr: what it logs must not end up in the printed report.
  // The production flags go in NODE_OPTIONS, as infra/ sets them, so one it does not take fails here too.
  const env = { ...process.env, NODE_OPTIONS: [process.env.NODE_OPTIONS ?? '', ...oneVcpuNodeOptions].join(' ').trim() };
  const child: ChildProcess = spawn(command!, args, { cwd: repoRoot, env, stdio: ['ignore', 2, 2, 'ipc'] });
  /** How it ended, once it has: an exit code, a signal or a spawn error. */
  let ended: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, sig) => {
      ended = sig ? `killed by ${sig}` : `exit code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      ended ??= String(err);
      resolve();
    });
  });

  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  let nextId = 1;
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(why));
    pending.clear();
  };
  child.on('message', (m: FromHitServer) => {
    if (m.type !== 'reply') return;
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.error !== undefined) p?.reject(new Error(`${name}: ${m.error}`));
    else p?.resolve(m.result);
  });
  void exited.then(() => failAll(`The ${name} ended (${ended})`));

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      if (ended !== undefined) return;
      if (child.connected) child.send({ type: 'close' } satisfies ToHitServer);
      const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 10_000).unref())]);
      if (timedOut) {
        child.kill('SIGKILL');
        await exited;
      }
    })());

  // Wait for the child to listen for calls (its imports take a second or two under tsx).
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`The ${name} did not start within the time allowed`)), opts.startTimeoutMs ?? 60_000);
      const onAbort = () => reject(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('Aborted'));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      child.on('message', (m: FromHitServer) => {
        if (m.type === 'hello') {
          done();
          resolve();
        }
      });
      void exited.then(() => {
        done();
        reject(new Error(`The ${name} ended during start-up (${ended}); its output is above`));
      });
    });
  } catch (err) {
    await close();
    throw err;
  }

  return {
    pid: child.pid!,
    close,
    call: (method, request, signal) =>
      new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('Aborted'));
        if (!child.connected) return reject(new Error(`The ${name} is not running`));
        const id = nextId++;
        const onAbort = () => {
          pending.delete(id);
          reject(signal?.reason instanceof Error ? signal.reason : new Error('Aborted'));
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        const settled = <T>(f: (v: T) => void) => (v: T) => {
          signal?.removeEventListener('abort', onAbort);
          f(v);
        };
        pending.set(id, { resolve: settled(resolve as (v: unknown) => void), reject: settled(reject) });
        child.send({ type: 'call', id, method, request } satisfies ToHitServer);
      }),
  };
}
