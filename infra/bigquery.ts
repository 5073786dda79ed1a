import { BigqueryDataset } from '@cdktf/provider-google/lib/bigquery-dataset';
import { BigqueryTable } from '@cdktf/provider-google/lib/bigquery-table';
import type { Construct } from 'constructs';
import { analyticsColumns, type ColumnType } from '../shared/analytics/schema';
import { analyticsTables } from '../shared/names';
import type { StackContext } from './stack';

/** BigQuery's names for the column types of shared/analytics/schema.ts (the legacy spellings the API echoes back). */
const bigQueryTypes: Record<ColumnType, string> = { STRING: 'STRING', INT64: 'INTEGER', BOOL: 'BOOLEAN', TIMESTAMP: 'TIMESTAMP', DATE: 'DATE' };

export interface BigQueryField {
  name: string;
  type: string;
  mode: 'NULLABLE' | 'REQUIRED';
}

/** The table schema, generated from the zod schema the analytics worker validates its rows with. */
export function analyticsTableSchema(): BigQueryField[] {
  return analyticsColumns.map((c) => ({ name: c.name, type: bigQueryTypes[c.type], mode: c.nullable ? 'NULLABLE' : 'REQUIRED' }));
}

function column(name: string): string {
  if (!analyticsColumns.some((c) => c.name === name)) throw new Error(`analytics schema has no column ${name} (shared/analytics/schema.ts)`);
  return name;
}

/** Partitioned by the event's day, clustered by organisation then campaign: what every report filters on. */
export const partitionColumn = column('event_date');
export const clusterColumns = [column('org_id'), column('campaign_id')];

export function analyticsStorage(scope: Construct, c: StackContext): { dataset: BigqueryDataset; table: BigqueryTable } {
  const dataset = new BigqueryDataset(scope, 'analytics_dataset', {
    datasetId: c.config.BIGQUERY_DATASET,
    location: c.config.ABP_BIGQUERY_LOCATION ?? c.region,
    description: 'ABP analytics: one row per click and per booked conversion, written by the analyticsWriter function.',
    deleteContentsOnDestroy: false,
    dependsOn: [c.apis.bigquery!],
  });
  const retentionDays = c.config.ABP_ANALYTICS_RETENTION_DAYS;
  const table = new BigqueryTable(scope, 'analytics_events', {
    datasetId: dataset.datasetId,
    tableId: analyticsTables.events,
    description: 'Tracking events (schema generated from shared/analytics/schema.ts).',
    schema: JSON.stringify(analyticsTableSchema()),
    timePartitioning: { type: 'DAY', field: partitionColumn, ...(retentionDays ? { expirationMs: retentionDays * 86_400_000 } : {}) },
    clustering: clusterColumns,
    deletionProtection: true,
  });
  return { dataset, table };
}
