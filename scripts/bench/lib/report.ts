import { cpus, release, totalmem, type as osType } from 'node:os';
import type { LoadResult } from './load';
import { autocannonVersion } from './load';

/** Compact plain-text tables for benchmark output. Figures only: benchmarks print, they never assert. */
export interface Scenario {
  label: string;
  result: LoadResult;
}

export function table(header: string[], rows: string[][], align: ('l' | 'r')[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => ((align[i] ?? (i === 0 ? 'l' : 'r')) === 'l' ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Milliseconds with about three significant digits. */
export function ms(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v < 1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
}

export function rate(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  return v < 100 ? v.toFixed(1) : Math.round(v).toString();
}

/** A share of one core (or any percentage), rounded: "97%"; "n/a" when unknown. */
export function percent(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? 'n/a' : `${Math.round(v)}%`;
}

export function ratio(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v >= 10) return `${v.toFixed(1)}x`;
  return `${v >= 0.01 ? v.toFixed(2) : v.toPrecision(2)}x`;
}

export function resultsTable(scenarios: Scenario[]): string {
  return table(
    ['scenario', 'conns', 'responses', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'errors', 'non-2xx'],
    scenarios.map(({ label, result: r }) => [
      label,
      String(r.connections),
      String(r.responses),
      rate(r.requestsPerSec),
      ms(r.p50),
      ms(r.p90),
      ms(r.p99),
      ms(r.max),
      String(r.errors),
      String(r.non2xx),
    ]),
  );
}

/** Each scenario as a multiple of `baseline`: latency ratios above 1 are slower, the req/s ratio below 1 is less throughput. */
export function ratioTable(scenarios: Scenario[], baseline: Scenario): string {
  const b = baseline.result;
  return table(
    ['scenario', `p50 / base`, `p99 / base`, `req/s / base`],
    scenarios.map(({ label, result: r }) => [label, ratio(r.p50 / b.p50), ratio(r.p99 / b.p99), ratio(r.requestsPerSec / b.requestsPerSec)]),
  );
}

/** Non-2xx status codes seen, e.g. "429 x12, 500 x1", or '' when every response was 2xx. */
export function unexpectedStatuses(r: LoadResult): string {
  return Object.entries(r.statusCodes)
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, n]) => `${code} x${n}`)
    .join(', ');
}

export function environmentLines(): string[] {
  const cpu = cpus();
  return [
    `node ${process.version} on ${osType()} ${release()} (${process.arch}), ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
    `load: autocannon ${autocannonVersion} in a worker thread, keep-alive, pipelining 1 (closed loop: one request in flight per connection)`,
  ];
}
