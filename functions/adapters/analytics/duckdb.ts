import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { DuckDBConnection, DuckDBInstance, DuckDBType, DuckDBValue } from '@duckdb/node-api';
import { analyticsColumns, analyticsRow, type AnalyticsRow, type ColumnType } from '../../../shared/analytics/schema';
import { compileEventLookup, compileReport, foldReport, toNumber, type CompiledQuery, type ScopedReportQuery, type ReportResult } from '../../../shared/analytics/report';
import { analyticsTables } from '../../../shared/names';
import type { AnalyticsStore } from './port';

type DuckDb = typeof import('@duckdb/node-api');
interface Handle {
  duckdb: DuckDb;
  instance: DuckDBInstance;
  /** Inserts, one at a time. */
  connection: DuckDBConnection;
  /** Reports and lookups, one at a time, beside the inserts. */
  reader: DuckDBConnection;
}

const table = analyticsTables.events;
const ddlTypes: Record<ColumnType, string> = { STRING: 'VARCHAR', INT64: 'BIGINT', BOOL: 'BOOLEAN', TIMESTAMP: 'TIMESTAMP', DATE: 'DATE' };
/** One statement per this many rows: 25 list parameters whatever the size, so it can be large. */
const insertBatch = 2000;

const createTableSql = `CREATE TABLE IF NOT EXISTS "${table}" (\n  ${analyticsColumns
  .map((c) => `"${c.name}" ${ddlTypes[c.type]}${c.nullable ? '' : ' NOT NULL'}${c.name === 'event_id' ? ' PRIMARY KEY' : ''}`)
  .join(',\n  ')}\n)`;
// A file created before a column joined the schema gets it (nullable, since old rows have no value).
const addColumnSql = analyticsColumns.map((c) => `ALTER TABLE "${table}" ADD COLUMN IF NOT EXISTS "${c.name}" ${ddlTypes[c.type]}`);

// Each column arrives as one list parameter, unnested in step. Timestamps come as ISO strings and are
// stored as UTC TIMESTAMP; going through TIMESTAMPTZ honours an explicit offset instead of dropping it.
const insertSql = `INSERT INTO "${table}" (${analyticsColumns.map((c) => `"${c.name}"`).join(', ')})
SELECT ${analyticsColumns
  .map((c) => (c.type === 'TIMESTAMP' ? `CAST(${c.name} AS TIMESTAMPTZ) AT TIME ZONE 'UTC'` : c.type === 'DATE' ? `CAST(${c.name} AS DATE)` : c.name))
  .join(', ')}
FROM (SELECT ${analyticsColumns.map((c) => `UNNEST($${c.name}) AS ${c.name}`).join(', ')})
ON CONFLICT DO NOTHING`;

/**
 * The embedded analytics store: one DuckDB file. DuckDB admits one writing process, so the local server
 * process owns the file. Two connections, each with a queue that keeps its callers from interleaving on
 * it: one for inserts and one for reads. A report (a window over the organisation's clicks, tens to
 * hundreds of milliseconds on a busy machine) then does not hold up the analytics worker's inserts, and
 * DuckDB's MVCC gives each read a consistent snapshot while they go on.
 */
export class DuckDbAnalyticsStore implements AnalyticsStore {
  private handle: Promise<Handle> | undefined;
  private writes: Promise<unknown> = Promise.resolve();
  private reads: Promise<unknown> = Promise.resolve();
  private closed = false;

  /** `path` is a file (its directory is created) or ':memory:'. Nothing is opened until first use. */
  constructor(private readonly path: string) {}

  /** Inserts run one at a time on the connection; the analytics worker hands them over in groups. */
  insert(rows: AnalyticsRow[]): Promise<void> {
    if (!rows.length) return Promise.resolve();
    return this.exclusive('writes', (h) => this.write(h, rows));
  }

  private async write({ duckdb, connection }: Handle, all: AnalyticsRow[]): Promise<void> {
    // A statement may not insert the same key twice; redeliveries can land in one batch.
    const seen = new Set<string>();
    const rows = all.filter((r) => !seen.has(r.event_id) && seen.add(r.event_id));
    for (let i = 0; i < rows.length; i += insertBatch) {
      const batch = rows.slice(i, i + insertBatch);
      const values: Record<string, DuckDBValue> = {};
      const types: Record<string, DuckDBType> = {};
      for (const c of analyticsColumns) {
        const name = c.name as keyof AnalyticsRow;
        values[c.name] = duckdb.listValue(batch.map((r) => r[name]));
        types[c.name] = duckdb.LIST(c.type === 'INT64' ? duckdb.BIGINT : c.type === 'BOOL' ? duckdb.BOOLEAN : duckdb.VARCHAR);
      }
      await connection.run(insertSql, values, types);
    }
  }

  async report(q: ScopedReportQuery): Promise<ReportResult> {
    const rows = await this.query(compileReport(q, 'duckdb', table));
    return foldReport(q.groupBy, rows);
  }

  async getEvents(orgId: string, eventIds: string[]): Promise<AnalyticsRow[]> {
    if (!eventIds.length) return [];
    const rows = await this.query(compileEventLookup('duckdb', table, orgId, eventIds));
    return rows.map((r) => {
      for (const c of analyticsColumns) if (c.type === 'INT64' && r[c.name] !== null) r[c.name] = toNumber(r[c.name]);
      return analyticsRow.parse(r);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.writes, this.reads]);
    const h = await this.handle?.catch(() => undefined);
    h?.reader.closeSync();
    h?.connection.closeSync();
    h?.instance.closeSync();
  }

  private query({ sql, params, types }: CompiledQuery): Promise<Record<string, unknown>[]> {
    return this.exclusive('reads', async ({ duckdb, reader }) => {
      const values: Record<string, DuckDBValue> = {};
      const declared: Record<string, DuckDBType> = {};
      for (const [name, v] of Object.entries(params)) {
        values[name] = Array.isArray(v) ? duckdb.listValue(v) : v;
        declared[name] = types[name] === 'ARRAY<STRING>' ? duckdb.LIST(duckdb.VARCHAR) : duckdb.VARCHAR;
      }
      const result = await reader.runAndReadAll(sql, values, declared);
      return result.getRowObjectsJS() as Record<string, unknown>[];
    });
  }

  private exclusive<T>(queue: 'writes' | 'reads', work: (h: Handle) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('The analytics store is closed'));
    const run = this[queue].then(async () => work(await this.open()));
    this[queue] = run.catch(() => undefined);
    return run;
  }

  private open(): Promise<Handle> {
    if (!this.handle) {
      const opening = this.connect();
      this.handle = opening;
      // A failed open (say, another process holds the file) is retried by the next call.
      opening.catch(() => {
        if (this.handle === opening) this.handle = undefined;
      });
    }
    return this.handle;
  }

  private async connect(): Promise<Handle> {
    // Loaded on first use: a process on BigQuery never loads the native module.
    const duckdb = await import('@duckdb/node-api');
    if (this.path !== ':memory:') await mkdir(dirname(this.path), { recursive: true });
    const instance = await duckdb.DuckDBInstance.create(this.path);
    try {
      const connection = await instance.connect();
      await connection.run(createTableSql);
      for (const sql of addColumnSql) await connection.run(sql);
      return { duckdb, instance, connection, reader: await instance.connect() };
    } catch (err) {
      instance.closeSync();
      throw err;
    }
  }
}
