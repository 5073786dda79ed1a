import { z } from 'zod';

/**
 * The analytics table, one row per click or conversion, described once with zod. The DuckDB DDL, the
 * BigQuery table schema (infra/) and the rows the analytics worker writes all derive from this.
 */
export const analyticsRow = z.object({
  event_id: z.string(),
  event_type: z.enum(['click', 'conversion']),
  org_id: z.string(),
  occurred_at: z.iso.datetime().describe('TIMESTAMP'),
  event_date: z.iso.date().describe('DATE; partitioning column'),
  link_id: z.string().nullable(),
  campaign_id: z.string().nullable(),
  affiliate_id: z.string().nullable(),
  click_id: z.string().nullable(),
  sub1: z.string().nullable(),
  sub2: z.string().nullable(),
  sub3: z.string().nullable(),
  sub4: z.string().nullable(),
  sub5: z.string().nullable(),
  country: z.string().nullable(),
  device: z.string().nullable(),
  visitor_hash: z.string().nullable(),
  is_bot: z.boolean(),
  status: z.string().nullable(),
  txn_id: z.string().nullable(),
  currency: z.string().nullable(),
  amount: z.number().int().nullable(),
  revenue: z.number().int(),
  payout: z.number().int(),
  /** Conversion rows: the conversion they are a version of (see ConversionEvent); null for clicks. */
  conversion_id: z.string().nullable(),
  /** Conversion rows: when this version was written; the report counts the latest. Null for clicks. */
  recorded_at: z.iso.datetime().nullable().describe('TIMESTAMP'),
});
export type AnalyticsRow = z.infer<typeof analyticsRow>;

export type ColumnType = 'STRING' | 'INT64' | 'BOOL' | 'TIMESTAMP' | 'DATE';
export interface Column {
  name: string;
  type: ColumnType;
  nullable: boolean;
}

/** Column names and types from a zod object of strings, integers, booleans, ISO datetimes and dates. */
export function columnsOf(schema: z.ZodObject): Column[] {
  return Object.entries(schema.shape as Record<string, z.ZodType>).map(([name, field]) => {
    let inner: z.ZodType = field;
    let nullable = false;
    if (inner instanceof z.ZodNullable || inner instanceof z.ZodOptional) {
      nullable = true;
      inner = inner.unwrap() as z.ZodType;
    }
    let type: ColumnType;
    if (inner instanceof z.ZodISODateTime) type = 'TIMESTAMP';
    else if (inner instanceof z.ZodISODate) type = 'DATE';
    else if (inner instanceof z.ZodString || inner instanceof z.ZodEnum) type = 'STRING';
    else if (inner instanceof z.ZodNumber) type = 'INT64';
    else if (inner instanceof z.ZodBoolean) type = 'BOOL';
    else throw new Error(`column ${name}: unsupported zod type`);
    return { name, type, nullable };
  });
}

export const analyticsColumns = columnsOf(analyticsRow);
