/**
 * The one report over the analytics table, defined once and compiled to DuckDB (local) and BigQuery
 * (production) SQL, so both backends answer with the same numbers. Pure: no I/O, no clients.
 *
 * The platform's definitions (rows are the `tracking_events` rows of one organisation):
 * - A row is a `click` or a `conversion`. The dimensions are columns: day → event_date (the UTC date),
 *   campaign → campaign_id, affiliate → affiliate_id, link → link_id, sub1..sub5, country, device.
 * - clicks: click rows with is_bot = false. botClicks: click rows with is_bot = true.
 * - uniqueClicks: non-bot clicks with no earlier non-bot click from the same visitor_hash on the same link_id
 *   within the preceding 60 minutes (a click exactly 60 minutes after the previous one is not unique). The
 *   look-back crosses the start of the range: a click at 00:10 on `from` whose previous click was at 23:50
 *   the day before is not unique. A click without a visitor_hash cannot be matched, so it is unique.
 *   Uniqueness is a property of the click alone, so it is additive across any grouping.
 * - A conversion may have several rows, its versions (booked, then approved, rejected or reversed): the one
 *   with the latest recorded_at stands for it (rows without a conversion_id are versions of their own).
 * - conversions: conversions whose standing version's status is neither 'rejected' nor 'reversed'. revenue and
 *   payout are the sums of those versions' `revenue` and `payout` columns per currency (integer minor units;
 *   USD is never added to EUR).
 * - A conversion takes sub1..sub5, country and device from the click it was attributed to (click_id, same
 *   organisation, however old the click), and day, campaign, affiliate and link from its own row.
 * - from/to (inclusive, UTC dates) filter event_date of clicks and conversions alike. affiliateIds, when
 *   present, keeps only those affiliates' rows (an empty list keeps none); campaignId likewise. Whether a
 *   click is unique never depends on who is looking: the look-back runs within one link, and a link belongs
 *   to one campaign and one affiliate for life (links cannot be re-pointed), so these filters keep or drop a
 *   link's clicks all together and may be applied before the look-back, where they make it cheap.
 * - Rows are sorted by the group-by columns in order, ascending, missing values last; totals add up all rows.
 *   With no group-by there is exactly one row, equal to the totals.
 * - Each event id counts once even if the table holds it twice: BigQuery's insertId de-duplication is only
 *   best effort, so the BigQuery query itself keeps one row per event_id. DuckDB's primary key already
 *   guarantees it, and there the window that would check it again is left out of the clicks (it cost a hash
 *   of every row). Conversions pick their standing version with a window in both dialects, which also keeps
 *   one row per event id.
 *
 * Safety: every value from the query is bound as a named parameter. The only text spliced into the SQL is
 * the table name (checked against a strict pattern), column names from the fixed tables below, and the row
 * limit, a constant.
 */
import { z } from 'zod';
import { badRequest } from '../errors';
import { maxAttributionWindowDays } from '../domain/schemas';
import { analyticsColumns } from './schema';

export const reportDimensions = ['day', 'campaign', 'affiliate', 'link', 'sub1', 'sub2', 'sub3', 'sub4', 'sub5', 'country', 'device'] as const;
export type ReportDimension = (typeof reportDimensions)[number];
export type SqlDialect = 'duckdb' | 'bigquery';

/** Inclusive day count: a whole leap year fits. */
export const maxReportDays = 366;
/**
 * The most rows (groups) a report answers. Grouped by a sub id that affiliates fill per click (a
 * gclid, say), a year's report would have a row per click: a clear 400 instead of a reply too big to hold.
 */
export const maxReportRows = 20_000;
/**
 * The query answers a row per group and currency (clicks under no currency, conversions under theirs): it may
 * return this many before the report is refused, whatever its groups.
 */
const maxQueryRows = maxReportRows * 4;
export const uniqueClickWindowMinutes = 60;
/** Currency key for conversions recorded without one (ISO 4217 "no currency"); conversion events always carry one. */
export const noCurrency = 'XXX';

/** Where each dimension comes from: `own` = the row itself; `click` = for a conversion, its attributed click. */
const dimensionColumns: Record<ReportDimension, { column: string; source: 'own' | 'click' }> = {
  day: { column: 'event_date', source: 'own' },
  campaign: { column: 'campaign_id', source: 'own' },
  affiliate: { column: 'affiliate_id', source: 'own' },
  link: { column: 'link_id', source: 'own' },
  sub1: { column: 'sub1', source: 'click' },
  sub2: { column: 'sub2', source: 'click' },
  sub3: { column: 'sub3', source: 'click' },
  sub4: { column: 'sub4', source: 'click' },
  sub5: { column: 'sub5', source: 'click' },
  country: { column: 'country', source: 'click' },
  device: { column: 'device', source: 'click' },
};

const dayMs = 86_400_000;
const dayNumber = (d: string) => Date.parse(`${d}T00:00:00Z`) / dayMs;
const addDays = (d: string, n: number) => new Date((dayNumber(d) + n) * dayMs).toISOString().slice(0, 10);

/**
 * No tracking data predates the Unix epoch, and BigQuery's DATE starts at 0001-01-01: the report looks a day
 * back from `from`, so year 0 (which a valid ISO date may have) would be a 500 there and a 200 in DuckDB. At the
 * other end it looks a day past `to`, and a date past 9999-12-31 is written +010000-01-01 (a 500 in both).
 */
const firstDay = '1970-01-01';
const lastDay = '9999-12-30';
const reportDate = (name: 'from' | 'to') =>
  z.iso
    .date({ error: `${name} must be a date YYYY-MM-DD` })
    .refine((d) => d >= firstDay, { error: `${name} must be on or after ${firstDay}` })
    .refine((d) => d <= lastDay, { error: `${name} must be on or before ${lastDay}` });

const reportFields = {
  from: reportDate('from'),
  to: reportDate('to'),
  groupBy: z
    .array(z.enum(reportDimensions, { error: `groupBy entries must be one of ${reportDimensions.join(', ')}` }))
    .refine((dims) => new Set(dims).size === dims.length, { error: 'groupBy must not repeat a dimension' })
    .default([]),
  affiliateIds: z.array(z.string().min(1, { error: 'affiliateIds entries must not be empty' })).optional(),
  campaignId: z.string().min(1, { error: 'campaignId must not be empty' }).optional(),
};

/** A from/to range of UTC dates, inclusive, of at most maxReportDays days: reports and live stats alike. */
export function checkRange(q: { from: string; to: string }, ctx: z.RefinementCtx): void {
  const days = dayNumber(q.to) - dayNumber(q.from) + 1;
  if (days < 1) ctx.addIssue({ code: 'custom', path: ['to'], message: 'to must be on or after from' });
  else if (days > maxReportDays) ctx.addIssue({ code: 'custom', path: ['to'], message: `to must be at most ${maxReportDays} days from from, inclusive` });
}

/** What a client may ask for; the HTTP layer adds orgId (and affiliateIds for affiliate users). */
export const reportRequestSchema = z.object(reportFields).superRefine(checkRange);
export const reportQuerySchema = z.object({ orgId: z.string().min(1, { error: 'orgId must not be empty' }), ...reportFields }).superRefine(checkRange);
export type ReportRequest = z.input<typeof reportRequestSchema>;
export type ReportQuery = z.output<typeof reportQuerySchema>;
declare const scopeChecked: unique symbol;
/**
 * A report query narrowed to what its caller may see. Only OrgScope.reportQuery (functions/services/tenancy.ts)
 * makes one, with the organisation's id and an affiliate user's ids in it, and the analytics port takes nothing
 * else: no route can read another organisation's rows, or an affiliate user another affiliate's.
 */
export type ScopedReportQuery = ReportQuery & { readonly [scopeChecked]: true };

export interface ReportMetrics {
  clicks: number;
  uniqueClicks: number;
  botClicks: number;
  conversions: number;
  /** Currency → integer minor units; a currency appears once it has money (conversions counted with a non-zero sum). */
  revenue: Record<string, number>;
  payout: Record<string, number>;
}
export interface ReportDimensionValues {
  day?: string;
  campaign?: string | null;
  affiliate?: string | null;
  link?: string | null;
  sub1?: string | null;
  sub2?: string | null;
  sub3?: string | null;
  sub4?: string | null;
  sub5?: string | null;
  country?: string | null;
  device?: string | null;
}
/** Only the grouped-by dimensions are present. */
export type ReportRow = ReportDimensionValues & ReportMetrics;
export interface ReportResult {
  rows: ReportRow[];
  totals: ReportMetrics;
}

export type ParamType = 'STRING' | 'ARRAY<STRING>';
export interface CompiledQuery {
  sql: string;
  /** Named parameters, without the dialect's @ or $ prefix. */
  params: Record<string, string | string[]>;
  /** Declared so an empty array still has a type (BigQuery cannot infer one). */
  types: Record<string, ParamType>;
}

/** The table reference spliced into SQL: `project.dataset.table` in backticks, or a plain quoted DuckDB name. */
export function quoteTable(table: string, dialect: SqlDialect): string {
  if (dialect === 'bigquery') {
    if (!/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_-]+){0,2}$/.test(table)) throw new Error(`invalid BigQuery table name: ${table}`);
    return `\`${table}\``;
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(table)) throw new Error(`invalid DuckDB table name: ${table}`);
  return `"${table}"`;
}

const param = (dialect: SqlDialect, name: string) => (dialect === 'bigquery' ? `@${name}` : `$${name}`);
const inList = (dialect: SqlDialect, expr: string, name: string) =>
  dialect === 'bigquery' ? `${expr} IN UNNEST(@${name})` : `list_contains($${name}, ${expr})`;
const keepOnePerEvent = (dialect: SqlDialect) => (dialect === 'bigquery' ? 'QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id) = 1' : '');

export function compileReport(query: ReportQuery, dialect: SqlDialect, table: string): CompiledQuery {
  const q = reportQuerySchema.parse(query);
  const t = quoteTable(table, dialect);
  const p = (name: string) => param(dialect, name);
  const params: CompiledQuery['params'] = { orgId: q.orgId, fromDate: q.from, toDate: q.to, lookbackDate: addDays(q.from, -1) };
  const types: CompiledQuery['types'] = { orgId: 'STRING', fromDate: 'STRING', toDate: 'STRING', lookbackDate: 'STRING' };
  // Campaign and affiliate filters on the table's rows (aliased r), clicks and conversions alike.
  const rowFilters: string[] = [];
  if (q.affiliateIds) {
    params.affiliateIds = q.affiliateIds;
    types.affiliateIds = 'ARRAY<STRING>';
    rowFilters.push(inList(dialect, 'r.affiliate_id', 'affiliateIds'));
  }
  if (q.campaignId !== undefined) {
    params.campaignId = q.campaignId;
    types.campaignId = 'STRING';
    rowFilters.push(`r.campaign_id = ${p('campaignId')}`);
  }
  const dims = q.groupBy.map((d) => ({ alias: `dim_${d}`, ...dimensionColumns[d] }));
  const dimValue = (alias: string, column: string) => (column === 'event_date' ? `CAST(${alias}.event_date AS STRING)` : `${alias}.${column}`);
  const attributed = dims.filter((d) => d.source === 'click');
  const dimsOf = (pick: (d: (typeof dims)[number]) => string) => dims.map((d) => `${dimValue(pick(d), d.column)} AS ${d.alias}, `).join('');
  const distinct = (cols: string[]) => [...new Set(cols)].join(', ');
  const clickColumns = distinct(['event_id', 'occurred_at', 'event_date', 'link_id', 'visitor_hash', 'is_bot', 'affiliate_id', 'campaign_id', ...dims.map((d) => d.column)]);
  const conversionColumns = distinct(['event_id', 'click_id', 'event_date', 'affiliate_id', 'campaign_id', 'currency', 'revenue', 'payout', ...dims.filter((d) => d.source === 'own').map((d) => d.column)]);
  const windowStart =
    dialect === 'bigquery'
      ? `TIMESTAMP_SUB(s.occurred_at, INTERVAL ${uniqueClickWindowMinutes} MINUTE)`
      : `s.occurred_at - INTERVAL ${uniqueClickWindowMinutes} MINUTE`;
  const and = (conds: string[]) => conds.map((c) => `\n    AND ${c}`).join('');

  const ctes = [
    // Reaches back a day so the first clicks of the range can see their predecessors.
    `click_rows AS (
  SELECT ${clickColumns}
  FROM ${t} AS r
  WHERE r.org_id = ${p('orgId')} AND r.event_type = 'click'
    AND r.event_date BETWEEN CAST(${p('lookbackDate')} AS DATE) AND CAST(${p('toDate')} AS DATE)${and(rowFilters)}
  ${keepOnePerEvent(dialect)}
)`,
    // Bots get partitions of their own: they are never a human's previous click.
    `scored_clicks AS (
  SELECT *, LAG(occurred_at) OVER (PARTITION BY link_id, visitor_hash, is_bot ORDER BY occurred_at, event_id) AS previous_at
  FROM click_rows
)`,
    // A conversion's versions share its event_date (a transition keeps the conversion's own), so the range keeps
    // or drops them together; the standing one is picked before its status is looked at. (Only a re-booking over
    // a rejection for its click id moves the date, and the rejected version it leaves behind never counts.)
    `conversion_versions AS (
  SELECT ${conversionColumns}, status
  FROM ${t} AS r
  WHERE r.org_id = ${p('orgId')} AND r.event_type = 'conversion'
    AND r.event_date BETWEEN CAST(${p('fromDate')} AS DATE) AND CAST(${p('toDate')} AS DATE)${and(rowFilters)}
  QUALIFY ROW_NUMBER() OVER (PARTITION BY COALESCE(r.conversion_id, r.event_id) ORDER BY COALESCE(r.recorded_at, r.occurred_at) DESC, r.event_id DESC) = 1
)`,
    `conversion_rows AS (
  SELECT * FROM conversion_versions WHERE COALESCE(status, '') NOT IN ('rejected', 'reversed')
)`,
  ];
  if (attributed.length) {
    // A conversion's click may predate the range by up to the longest attribution window, and postdate its
    // conversion by the few minutes of clock skew the state worker accepts (flagged for review): one day either
    // side. Bounded so that BigQuery prunes date partitions instead of reading the organisation's every click.
    params.attributedFromDate = addDays(q.from, -(maxAttributionWindowDays + 1));
    params.attributedToDate = addDays(q.to, 1);
    types.attributedFromDate = 'STRING';
    types.attributedToDate = 'STRING';
    ctes.push(`attributed_clicks AS (
  SELECT ${distinct(['event_id', ...attributed.map((d) => d.column)])}
  FROM ${t}
  WHERE org_id = ${p('orgId')} AND event_type = 'click'
    AND event_date BETWEEN CAST(${p('attributedFromDate')} AS DATE) AND CAST(${p('attributedToDate')} AS DATE)
    AND event_id IN (SELECT click_id FROM conversion_rows)
  ${keepOnePerEvent(dialect)}
)`);
  }
  ctes.push(`facts AS (
  SELECT ${dimsOf(() => 's')}CAST(NULL AS STRING) AS currency,
    CASE WHEN s.is_bot THEN 0 ELSE 1 END AS clicks,
    CASE WHEN NOT s.is_bot AND (s.visitor_hash IS NULL OR s.previous_at IS NULL OR s.previous_at < ${windowStart}) THEN 1 ELSE 0 END AS unique_clicks,
    CASE WHEN s.is_bot THEN 1 ELSE 0 END AS bot_clicks,
    0 AS conversions, 0 AS revenue, 0 AS payout
  FROM scored_clicks AS s
  WHERE s.event_date >= CAST(${p('fromDate')} AS DATE)
  UNION ALL
  SELECT ${dimsOf((d) => (d.source === 'click' ? 'a' : 'c'))}c.currency,
    0 AS clicks, 0 AS unique_clicks, 0 AS bot_clicks,
    1 AS conversions, c.revenue, c.payout
  FROM conversion_rows AS c${attributed.length ? '\n  LEFT JOIN attributed_clicks AS a ON a.event_id = c.click_id' : ''}
)`);
  const groups = [...dims.map((d) => d.alias), 'currency'].join(', ');
  const order = [...dims.map((d) => `${d.alias} ASC NULLS LAST`), 'currency ASC NULLS FIRST'].join(', ');
  const sql = `WITH ${ctes.join(',\n')}
SELECT ${groups},
  CAST(SUM(clicks) AS INT64) AS clicks,
  CAST(SUM(unique_clicks) AS INT64) AS unique_clicks,
  CAST(SUM(bot_clicks) AS INT64) AS bot_clicks,
  CAST(SUM(conversions) AS INT64) AS conversions,
  CAST(SUM(revenue) AS INT64) AS revenue,
  CAST(SUM(payout) AS INT64) AS payout
FROM facts
GROUP BY ${groups}
ORDER BY ${order}
LIMIT ${maxQueryRows + 1}`;
  return { sql, params, types };
}

/** Rows of one organisation by event id, with timestamps and dates rendered as the schema's ISO strings. */
export function compileEventLookup(dialect: SqlDialect, table: string, orgId: string, eventIds: string[]): CompiledQuery {
  const select = analyticsColumns.map(({ name, type }) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid column name: ${name}`);
    if (type === 'TIMESTAMP') {
      return dialect === 'bigquery'
        ? `FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E3SZ', ${name}, 'UTC') AS ${name}`
        : `strftime(${name}, '%Y-%m-%dT%H:%M:%S.%gZ') AS ${name}`;
    }
    if (type === 'DATE') return `CAST(${name} AS STRING) AS ${name}`;
    return name;
  });
  const sql = `SELECT ${select.join(', ')}
FROM ${quoteTable(table, dialect)}
WHERE org_id = ${param(dialect, 'orgId')} AND ${inList(dialect, 'event_id', 'eventIds')}
${keepOnePerEvent(dialect)}
ORDER BY occurred_at, event_id`;
  return { sql, params: { orgId, eventIds }, types: { orgId: 'STRING', eventIds: 'ARRAY<STRING>' } };
}

/** Either driver's number types (DuckDB BIGINT arrives as bigint) to a JS number. */
export function toNumber(v: unknown): number {
  if (v === null || v === undefined) return 0;
  const n = typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : Number(String(v));
  if (!Number.isSafeInteger(n)) throw new Error(`not a safe integer: ${String(v)}`);
  return n;
}

const emptyMetrics = (): ReportMetrics => ({ clicks: 0, uniqueClicks: 0, botClicks: 0, conversions: 0, revenue: {}, payout: {} });

function addInto(target: ReportMetrics, m: ReportMetrics): void {
  target.clicks += m.clicks;
  target.uniqueClicks += m.uniqueClicks;
  target.botClicks += m.botClicks;
  target.conversions += m.conversions;
  for (const [c, v] of Object.entries(m.revenue)) target.revenue[c] = (target.revenue[c] ?? 0) + v;
  for (const [c, v] of Object.entries(m.payout)) target.payout[c] = (target.payout[c] ?? 0) + v;
}

/**
 * The compiled query returns one row per group and currency (clicks sit in the row without a currency);
 * this folds them into one row per group with per-currency maps, in the query's order, plus the totals.
 */
export function foldReport(groupBy: readonly ReportDimension[], raw: ReadonlyArray<Record<string, unknown>>): ReportResult {
  const tooLarge = () =>
    badRequest(`The report has more than ${maxReportRows} rows: ask for a shorter range or fewer groupBy dimensions`, [{ field: 'groupBy', message: `gives more than ${maxReportRows} rows for this range` }]);
  const tooBig = () => badRequest('A sum in this report passes 2^53, past which a JSON number is not exact: ask for a shorter range', [{ field: 'to', message: 'gives sums too large to answer exactly' }]);
  // Past 2^53 is the data's size, for the caller to narrow; any other value that is no integer is our bug, a 500.
  const num = (v: unknown) => {
    if (typeof v === 'bigint' && (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER))) throw tooBig();
    if (typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v)) throw tooBig();
    return toNumber(v);
  };
  if (raw.length > maxQueryRows) throw tooLarge();
  const byGroup = new Map<string, ReportRow>();
  const totals = emptyMetrics();
  for (const r of raw) {
    const dims: ReportDimensionValues = {};
    for (const d of groupBy) {
      const v = r[`dim_${d}`];
      const value = typeof v === 'string' ? v : null;
      if (d === 'day') {
        if (value === null) throw new Error('report row without a day');
        dims.day = value;
      } else dims[d] = value;
    }
    const conversions = num(r.conversions);
    const currency = typeof r.currency === 'string' ? r.currency : noCurrency;
    const m: ReportMetrics = {
      clicks: num(r.clicks),
      uniqueClicks: num(r.unique_clicks),
      botClicks: num(r.bot_clicks),
      conversions,
      // A currency appears once it has money (as in the live stats, whose counters go back to 0 on a reversal).
      revenue: conversions && num(r.revenue) ? { [currency]: num(r.revenue) } : {},
      payout: conversions && num(r.payout) ? { [currency]: num(r.payout) } : {},
    };
    const key = JSON.stringify(groupBy.map((d) => dims[d]));
    let row = byGroup.get(key);
    if (!row) {
      if (byGroup.size === maxReportRows) throw tooLarge();
      row = { ...dims, ...emptyMetrics() };
      byGroup.set(key, row);
    }
    addInto(row, m);
    addInto(totals, m);
  }
  const exact = (m: ReportMetrics) => [m.clicks, m.uniqueClicks, m.botClicks, m.conversions, ...Object.values(m.revenue), ...Object.values(m.payout)].every(Number.isSafeInteger);
  if (!exact(totals) || ![...byGroup.values()].every(exact)) throw tooBig();
  const rows = [...byGroup.values()];
  if (!groupBy.length && !rows.length) rows.push(emptyMetrics());
  return { rows, totals };
}
