import { execFile, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';

/**
 * Linux process facts for the benchmarks, read from /proc, and CPU affinity set with taskset(1): which cores
 * this process may use, which processes carry a given argument, how much CPU a process used, and pinning a
 * process (every thread) to some cores. Everything degrades to "unknown" (undefined, []) where /proc or
 * taskset is missing, so a benchmark can say so instead of failing.
 */

const run = promisify(execFile);

/** "0-2,5" -> [0, 1, 2, 5] (the kernel's cpu-list format). */
export function parseCpuList(list: string): number[] {
  const cores: number[] = [];
  for (const part of list.trim().split(',').filter(Boolean)) {
    const [from, to] = part.split('-').map(Number);
    if (from === undefined || !Number.isInteger(from)) continue;
    for (let c = from; c <= (to ?? from); c++) cores.push(c);
  }
  return cores;
}

/** [0, 1, 2, 5] -> "0-2,5". */
export function formatCpuList(cores: readonly number[]): string {
  const sorted = [...new Set(cores)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

function procStatusField(pid: number | 'self', field: string): string | undefined {
  try {
    return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** The cores a process may run on (its affinity mask), or undefined when it is gone or /proc is missing. */
export function allowedCores(pid: number | 'self'): number[] | undefined {
  const list = procStatusField(pid, 'Cpus_allowed_list');
  return list === undefined ? undefined : parseCpuList(list);
}

/** The cores this process may use: its affinity (which a container or a taskset around us narrows), not the machine's count. */
export function usableCores(): number[] {
  return allowedCores('self') ?? Array.from({ length: availableParallelism() }, (_, i) => i);
}

/** Whether taskset(1) can be run here. */
export const hasTaskset: () => boolean = (() => {
  let known: boolean | undefined;
  return () => (known ??= spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0);
})();

/** Pins every thread of `pid` (threads it starts later inherit the mask from the thread that starts them). */
export async function pinProcess(pid: number, cores: readonly number[]): Promise<void> {
  await run('taskset', ['--all-tasks', '--cpu-list', '--pid', formatCpuList(cores), String(pid)]);
}

/** The processes whose command line has one of `args` as a whole argument (e.g. `--port=8085`). */
export function pidsWithArg(args: readonly string[]): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  return entries.flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return [];
    try {
      return readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').some((a) => args.includes(a)) ? [Number(entry)] : [];
    } catch {
      return []; // exited meanwhile
    }
  });
}

/** The executable's short name (e.g. "java", "node"), or undefined when the process is gone. */
export function commandName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

const ticksPerSecond: () => number = (() => {
  let known: number | undefined;
  return () => (known ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100);
})();

/** CPU seconds (user + system, every thread) a process has used so far, or undefined when it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond(); // utime, stime (fields 14 and 15)
  } catch {
    return undefined;
  }
}

/** Busy seconds per core since boot (every process and the kernel; idle and I/O wait excluded), from /proc/stat. */
function coreBusySeconds(): Map<number, number> {
  const busy = new Map<number, number>();
  let stat: string;
  try {
    stat = readFileSync('/proc/stat', 'utf8');
  } catch {
    return busy;
  }
  for (const line of stat.split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    // user nice system idle iowait irq softirq steal (guest time is already counted in user)
    const [user, nice, system, , , irq, softirq, steal] = m[2]!.trim().split(/\s+/).map(Number);
    busy.set(Number(m[1]), ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / ticksPerSecond());
  }
  return busy;
}

/** CPU used over an interval, as a percentage of one core (200% = two cores busy). */
export interface CpuReading {
  /** Per named group of processes, plus `others`: the rest of the machine (other processes, the kernel, a hypervisor's steal). */
  groups: Record<string, number>;
  /** How busy each core was, whoever used it. */
  cores: Map<number, number>;
}

/** Measures CPU from now on: `const m = cpuMeter(groups); …; m.read()`. */
export function cpuMeter(groups: Record<string, readonly number[]>): { read(): CpuReading } {
  const total = (pids: readonly number[]) => pids.reduce((s, pid) => s + (cpuSeconds(pid) ?? Number.NaN), 0);
  const t0 = performance.now();
  const start = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, total(pids)]));
  const cores0 = coreBusySeconds();
  return {
    read: () => {
      const secs = (performance.now() - t0) / 1000;
      const pct = (cpuSecs: number) => (cpuSecs / secs) * 100;
      const byGroup = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, pct(total(pids) - start[k]!)]));
      const cores = new Map([...coreBusySeconds()].map(([core, busy]) => [core, pct(busy - (cores0.get(core) ?? Number.NaN))]));
      const machine = cores.size ? [...cores.values()].reduce((a, b) => a + b, 0) : Number.NaN;
      const ours = Object.values(byGroup).reduce((a, b) => a + b, 0);
      return { groups: { ...byGroup, others: Math.max(0, machine - ours) }, cores };
    },
  };
}
