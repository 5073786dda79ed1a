import type { AnalyticsRow } from '../../../shared/analytics/schema';
import { analyticsRow } from '../../../shared/analytics/schema';
import { compileEventLookup, compileReport, foldReport, type CompiledQuery, type ScopedReportQuery, type ReportResult } from '../../../shared/analytics/report';
import { analyticsTables } from '../../../shared/names';
import type { AnalyticsStore } from './port';

/** The part of the BigQuery client used here. The real client satisfies it; tests pass a fake. */
export interface BigQueryClient {
  dataset(id: string): { table(id: string): { insert(rows: object[], options: { raw: true }): Promise<unknown> } };
  query(options: {
    query: string;
    params: Record<string, string | string[]>;
    types: Record<string, string | string[]>;
    location?: string;
  }): Promise<[Record<string, unknown>[], ...unknown[]]>;
}

export interface BigQueryStoreOptions {
  projectId: string;
  dataset: string;
  /** The dataset's location, when jobs must be pinned to it. */
  location?: string;
  client?: BigQueryClient;
}

/** insertAll accepts up to 50,000 rows and 10 MB a request; 500 rows stays far below the byte limit. */
const insertBatch = 500;

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
    for (let i = 0; i < rows.length; i += insertBatch) {
      // A partial failure throws, so the Pub/Sub message is redelivered; the insertIds make the retry safe.
      await table.insert(rows.slice(i, i + insertBatch).map((r) => ({ insertId: r.event_id, json: r })), { raw: true });
    }
  }

  async report(q: ScopedReportQuery): Promise<ReportResult> {
    return foldReport(q.groupBy, await this.query(compileReport(q, 'bigquery', this.table)));
  }

  async getEvents(orgId: string, eventIds: string[]): Promise<AnalyticsRow[]> {
    if (!eventIds.length) return [];
    const rows = await this.query(compileEventLookup('bigquery', this.table, orgId, eventIds));
    return rows.map((r) => analyticsRow.parse(r));
  }

  async close(): Promise<void> {
    // The client holds no connections that need closing.
    this.client = undefined;
  }

  private async query({ sql, params, types }: CompiledQuery): Promise<Record<string, unknown>[]> {
    const bigQueryTypes = Object.fromEntries(Object.entries(types).map(([name, t]) => [name, t === 'ARRAY<STRING>' ? ['STRING'] : t]));
    const [rows] = await (await this.bigquery()).query({
      query: sql,
      params,
      types: bigQueryTypes,
      ...(this.options.location ? { location: this.options.location } : {}),
    });
    return rows;
  }

  /** Built on first use, never at import: constructing a Google client starts credential discovery. */
  private bigquery(): Promise<BigQueryClient> {
    this.client ??= import('@google-cloud/bigquery').then(({ BigQuery }) => new BigQuery({ projectId: this.options.projectId }));
    return this.client;
  }
}
