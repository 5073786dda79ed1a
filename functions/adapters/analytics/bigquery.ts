import { z } from 'zod';
import type { AnalyticsRow } from '../../../shared/analytics/schema';
import { analyticsRow } from '../../../shared/analytics/schema';
import { compileEventLookup, compileReport, foldReport, type CompiledQuery, type ScopedReportQuery, type ReportResult } from '../../../shared/analytics/report';
import { config } from '../../../shared/config';
import { analyticsTables } from '../../../shared/names';
import { InsertFailed, QueryTimedOut, RowsRefused, type AnalyticsStore } from './port';

/** The part of the BigQuery client used here. The real client satisfies it; tests pass a fake. */
export interface BigQueryClient {
  dataset(id: string): { table(id: string): BigQueryTable };
  query(
    query: {
      query: string;
      params: Record<string, string | string[]>;
      types: Record<string, string | string[]>;
      location?: string;
      jobTimeoutMs?: number;
    },
    options?: { timeoutMs?: number },
  ): Promise<[Record<string, unknown>[], ...unknown[]]>;
}

interface BigQueryTable {
  insert(rows: object[], options: { raw: true; partialRetries: number }): Promise<unknown>;
}

export interface BigQueryStoreOptions {
  projectId: string;
  dataset: string;
  /** The dataset's location, when jobs must be pinned to it. */
  location?: string;
  /** How long a report or lookup may run; BIGQUERY_QUERY_TIMEOUT_SECONDS when not given. */
  queryTimeoutMs?: number;
  client?: BigQueryClient;
}

/** insertAll accepts up to 50,000 rows and 10 MB a request; 500 rows stays far below the byte limit. */
const insertBatch = 500;
/** BigQuery stops a job this long after the API stopped waiting for it (see query()). */
const jobGraceMs = 5_000;

/**
 * Production analytics on BigQuery: streaming inserts with insertId = event_id (BigQuery's best-effort
 * de-duplication; the report SQL keeps one row per event id for the rest), and parameterised queries.
 */
export class BigQueryAnalyticsStore implements AnalyticsStore {
  private client: Promise<BigQueryClient> | undefined;
  readonly table: string;

  constructor(private readonly options: BigQueryStoreOptions) {
    this.table = `${options.projectId}.${options.dataset}.${analyticsTables.events}`;
    if (options.client) this.client = Promise.resolve(options.client);
  }

  async insert(rows: AnalyticsRow[]): Promise<void> {
    if (!rows.length) return;
    const table = (await this.bigquery()).dataset(this.options.dataset).table(analyticsTables.events);
    const refused = new Map<number, Error>();
    for (let start = 0; start < rows.length; start += insertBatch) {
      for (const [i, reason] of await insertBatchOnce(table, rows.slice(start, start + insertBatch))) refused.set(start + i, reason);
    }
    if (refused.size) throw new RowsRefused(refused);
  }

  async report(q: ScopedReportQuery): Promise<ReportResult> {
    return foldReport(q.groupBy, await this.query('report', compileReport(q, 'bigquery', this.table)));
  }

  async getEvents(orgId: string, eventIds: string[]): Promise<AnalyticsRow[]> {
    if (!eventIds.length) return [];
    const rows = await this.query('event lookup', compileEventLookup('bigquery', this.table, orgId, eventIds));
    return rows.map((r) => analyticsRow.parse(r));
  }

  async close(): Promise<void> {
    // The client holds no connections that need closing.
    this.client = undefined;
  }

  /**
   * Two bounds, because either alone leaves a gap. `timeoutMs` (how long jobs.getQueryResults waits) bounds the
   * API request: past it the client gives up instead of polling for as long as the job runs. `jobTimeoutMs`
   * (JobConfiguration) makes BigQuery stop the job, so a report nobody waits for any more, retried by an
   * impatient user, does not keep spending slots. The pinned client sends jobTimeoutMs only through jobs.insert
   * (its jobs.query fast path skips queries that set it): one round trip more per report, which is not the hot
   * path. The job's limit ends a little after the wait, so the caller always gets the wait's end, not a race
   * with BigQuery's own cancellation.
   */
  private async query(what: string, { sql, params, types }: CompiledQuery): Promise<Record<string, unknown>[]> {
    const timeoutMs = this.options.queryTimeoutMs ?? config().BIGQUERY_QUERY_TIMEOUT_SECONDS * 1000;
    const bigQueryTypes = Object.fromEntries(Object.entries(types).map(([name, t]) => [name, t === 'ARRAY<STRING>' ? ['STRING'] : t]));
    try {
      const [rows] = await (await this.bigquery()).query(
        {
          query: sql,
          params,
          types: bigQueryTypes,
          ...(this.options.location ? { location: this.options.location } : {}),
          jobTimeoutMs: timeoutMs + jobGraceMs,
        },
        { timeoutMs },
      );
      return rows;
    } catch (err) {
      if (timedOut(err)) throw new QueryTimedOut(what, timeoutMs, { cause: err });
      throw err;
    }
  }

  /** Built on first use, never at import: constructing a Google client starts credential discovery. */
  private bigquery(): Promise<BigQueryClient> {
    this.client ??= import('@google-cloud/bigquery').then(({ BigQuery }) => new BigQuery({ projectId: this.options.projectId }));
    return this.client;
  }
}

/**
 * One insertAll, and at most one more. BigQuery answers row by row: a request with an invalid row stores
 * nothing, naming the invalid rows (reason `invalid`, or another of the row's own) and the others (`stopped`:
 * not stored because of a neighbour). The rows not to blame go again, together, once; the rest are refused,
 * so only their deliveries fail (retried, then dead-lettered) instead of one request per row of the group.
 * Returns the rows not stored, by index, each with its reason; a request that fails as a whole throws.
 */
async function insertBatchOnce(table: BigQueryTable, rows: AnalyticsRow[]): Promise<Map<number, Error>> {
  const first = await insertAll(table, rows, rows.map((_, i) => i));
  const refused = new Map<number, Error>();
  const again: number[] = [];
  for (const [i, errors] of first) {
    if (errors.every((e) => e.reason === 'stopped')) again.push(i);
    else refused.set(i, rowError(rows[i]!, errors));
  }
  if (!again.length) return refused;
  try {
    for (const [i, errors] of await insertAll(table, rows, again)) refused.set(i, rowError(rows[i]!, errors));
  } catch (err) {
    for (const i of again) refused.set(i, err as Error);
  }
  return refused;
}

/** tabledata.insertAll's per-row answer (https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll). */
const insertAllResponse = z.object({
  insertErrors: z
    .array(z.object({ index: z.number().int().min(0), errors: z.array(z.object({ reason: z.string().optional(), location: z.string().optional(), message: z.string().optional() })).default([]) }))
    .default([]),
});
type RowErrorProto = z.infer<typeof insertAllResponse>['insertErrors'][number]['errors'][number];

/**
 * Sends `rows[i]` for each i in `indexes` in one request. Resolves to nothing when BigQuery stored them all;
 * otherwise to every row of the request, each with the errors BigQuery named for it (none named: it was not
 * to blame, but a request that refused rows is not known to have stored any other).
 */
async function insertAll(table: BigQueryTable, rows: AnalyticsRow[], indexes: number[]): Promise<Map<number, RowErrorProto[]>> {
  try {
    // The client's own partial retries would send the invalid rows again with the stopped ones: ours don't.
    await table.insert(indexes.map((i) => ({ insertId: rows[i]!.event_id, json: rows[i] })), { raw: true, partialRetries: 0 });
    return new Map();
  } catch (err) {
    const answer = (err as Error)?.name === 'PartialFailureError' ? insertAllResponse.safeParse((err as { response?: unknown }).response) : undefined;
    if (!answer?.success || !answer.data.insertErrors.length) {
      throw new InsertFailed(`BigQuery insertAll failed as a whole: ${String((err as Error)?.message ?? err)}`, { cause: err });
    }
    const named = new Map(answer.data.insertErrors.map((e) => [indexes[e.index], e.errors]));
    return new Map(indexes.map((i) => [i, named.get(i) ?? []]));
  }
}

function rowError(row: AnalyticsRow, errors: RowErrorProto[]): Error {
  const named = errors.filter((e) => e.reason !== 'stopped');
  if (!named.length) return new Error(`BigQuery did not store event ${row.event_id}: other rows of its request were refused`);
  return new Error(`BigQuery refused event ${row.event_id}: ${named.map((e) => `${e.reason ?? 'error'}${e.location ? ` at ${e.location}` : ''}: ${e.message ?? ''}`).join('; ')}`);
}

/**
 * The pinned client's own words when the wait ends before the job (job.getQueryResults and the jobs.query
 * path both say it), or BigQuery's `timeout` reason should the job's limit end it first.
 */
function timedOut(err: unknown): boolean {
  if (err instanceof Error && /did not complete before \d+ ?ms/.test(err.message)) return true;
  const errors = (err as { errors?: unknown })?.errors;
  return Array.isArray(errors) && errors.some((e) => (e as { reason?: unknown })?.reason === 'timeout');
}
