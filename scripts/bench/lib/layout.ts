import { allowedCores, formatCpuList, hasTaskset, pinProcess, usableCores, type CpuReading } from './cpu';

/**
 * Which process of a benchmark runs on which cores. In production the function under test runs on an
 * instance of its own (1 vCPU); here it shares the machine with the bench driver, the load generator, the
 * rest of the stack and two emulator JVMs. Pinned, the hit server gets the last usable core to itself and
 * everything else is kept on the other cores, so what limits the function is its own core, not its neighbours.
 */
export interface Layout {
  /** The hit server's cores; undefined when nothing is pinned. */
  serverCores?: number[];
  /** The cores of everything else (this process, the tracking benchmark's state worker and the emulators) while pinned. */
  restCores?: number[];
  /** How the layout came about, for the report: "--pin", "--no-pin", or why pinning was not possible. */
  why: string;
}

/** `pin` is the --pin switch; pinning needs taskset(1) and at least two usable cores. */
export function planLayout(pin: boolean): Layout {
  if (!pin) return { why: 'not pinned (--no-pin)' };
  const cores = usableCores();
  if (cores.length < 2) return { why: `not pinned: --pin needs 2 usable cores, this process may use only ${formatCpuList(cores)}` };
  if (!hasTaskset()) return { why: 'not pinned: --pin needs taskset(1) (util-linux), which is not installed' };
  return { serverCores: cores.slice(-1), restCores: cores.slice(0, -1), why: '--pin' };
}

/**
 * Pins every thread of each process to the layout's rest cores (a no-op when not pinned), or with
 * `withServerCore` lets them use the hit server's core too (the hit server itself stays where it is).
 * Threads started later inherit the mask of the thread that starts them, so this process's load-generator
 * threads and the JVMs' growing thread pools follow. A process that exited meanwhile is skipped.
 */
export async function pinRest(layout: Layout, pids: readonly number[], opts: { withServerCore?: boolean } = {}): Promise<void> {
  if (!layout.restCores) return;
  const cores = opts.withServerCore ? [...layout.restCores, ...(layout.serverCores ?? [])] : layout.restCores;
  for (const pid of pids) {
    try {
      await pinProcess(pid, cores);
    } catch (err) {
      if (allowedCores(pid)) throw err; // still running: pinning it failed for real
    }
  }
}

/** "label pid N on core(s) X", read back from the kernel, for each process. */
export function whereTheyRun(procs: readonly { label: string; pids: readonly number[] }[]): string {
  const cores = (pid: number) => {
    const c = allowedCores(pid);
    return c ? `${c.length === 1 ? 'core' : 'cores'} ${formatCpuList(c)}` : 'exited';
  };
  return procs.map((p) => `${p.label} ${p.pids.length ? p.pids.map((pid) => `pid ${pid} on ${cores(pid)}`).join(', ') : '(not found)'}`).join('; ');
}

/** The CPU group (see cpuMeter) of the tracking benchmark's state worker process, which runs on the rest cores. */
export const stateWorkerGroup = 'state worker';

/**
 * What limited a closed-loop run, from the CPU used meanwhile: the cores that were (nearly) saturated, and
 * by whom; or none ("waiting"), when the connections were waiting on answers (the emulators' latency, say)
 * rather than on CPU. Work of other processes on the machine shows up here too ("others").
 */
export function limitOf(layout: Layout, cpu: CpuReading): string {
  const busy = 90;
  const busyOf = (cores: readonly number[]) => cores.reduce((sum, c) => sum + (cpu.cores.get(c) ?? Number.NaN), 0);
  const mostly = (shares: Record<string, number>) => Object.entries(shares).sort((a, b) => b[1] - a[1])[0]![0];
  const g = cpu.groups;
  const [server, bench, emulators] = [g.server ?? Number.NaN, g.bench ?? Number.NaN, g.emulators ?? Number.NaN];
  // The tracking benchmark's state worker (a child of its own, on the rest cores when pinned); 0 where there is none.
  const stateWorker = g[stateWorkerGroup] ?? 0;
  // Its JavaScript runs on one thread too: near a core's worth of CPU, that thread is a limit whatever the cores.
  const stateLimit = stateWorker >= busy ? ['state worker (its event loop)'] : [];
  const rest = { bench, emulators, ...(g[stateWorkerGroup] === undefined ? {} : { [stateWorkerGroup]: stateWorker }) };
  if (!layout.serverCores || !layout.restCores) {
    // Unpinned, the hit server may spread over every core, but its JavaScript runs on one thread: near a
    // core's worth of CPU, that thread is the limit even with cores to spare.
    const all = usableCores();
    const total = busyOf(all);
    if (!Number.isFinite(total)) return 'n/a';
    const limits: string[] = [];
    if (server >= busy) limits.push('hit server (its event loop)');
    limits.push(...stateLimit);
    if (total >= busy * all.length) limits.push(`all cores (mostly ${mostly({ server, ...rest, others: total - server - bench - emulators - stateWorker })})`);
    return limits.join(' + ') || 'waiting';
  }
  const onServerCore = busyOf(layout.serverCores);
  const onRest = busyOf(layout.restCores);
  if (!Number.isFinite(onServerCore) || !Number.isFinite(onRest)) return 'n/a';
  const limits: string[] = [];
  if (onServerCore >= busy * layout.serverCores.length) {
    const others = onServerCore - server;
    limits.push(others >= 10 ? `server core (${Math.round(others)}% others)` : 'server core');
  }
  limits.push(...stateLimit);
  if (onRest >= busy * layout.restCores.length) {
    limits.push(`core ${formatCpuList(layout.restCores)} (mostly ${mostly({ ...rest, others: onRest - bench - emulators - stateWorker })})`);
  }
  return limits.join(' + ') || 'waiting';
}
