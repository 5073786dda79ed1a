import { join } from 'node:path';
import { config } from '../../../shared/config';
import { BigQueryAnalyticsStore } from './bigquery';
import { DuckDbAnalyticsStore } from './duckdb';
import type { AnalyticsStore } from './port';

export type { AnalyticsStore } from './port';

let store: AnalyticsStore | undefined;

/** The process-wide analytics store chosen by ANALYTICS_BACKEND. Cheap to call: nothing connects until used. */
export function analyticsStore(): AnalyticsStore {
  if (!store) {
    const c = config();
    store =
      c.ANALYTICS_BACKEND === 'bigquery'
        ? new BigQueryAnalyticsStore({ projectId: c.GOOGLE_CLOUD_PROJECT, dataset: c.BIGQUERY_DATASET })
        : new DuckDbAnalyticsStore(duckDbPath(c.ABP_DATA_DIR));
  }
  return store;
}

export function duckDbPath(dataDir: string): string {
  return join(dataDir, 'analytics.duckdb');
}

/** Closes the store (for DuckDB, releasing the file); the next analyticsStore() call opens a fresh one. */
export async function closeAnalyticsStore(): Promise<void> {
  const s = store;
  store = undefined;
  if (s) await s.close();
}
