import { z } from 'zod';
import { documentId, metricsResource } from '../../../shared/domain/schemas';
import { reportDimensions, type ReportResult } from '../../../shared/analytics/report';
import { formatMinor } from '../../../shared/money';
import { analyticsStore } from '../../adapters/analytics';
import { withoutRevenueFor } from '../redaction';
import { ok, orgRoute, type Reply } from '../router';

/** JSON; with format=csv the same rows as text/csv, money as decimals in the major unit, a column per currency. */
const reportResponse = z.object({
  rows: z.array(metricsResource.extend(Object.fromEntries(reportDimensions.map((d) => [d, z.string().nullable().optional().describe('Present when grouped by it')])))),
  totals: metricsResource,
});

const reportCsvDoc =
  'With format=csv: a header line, then one line per row: the groupBy columns in the order asked, clicks, uniqueClicks, botClicks, conversions, ' +
  'then for each currency (sorted) revenue_XXX (not shown to affiliate users) and payout_XXX as decimals in the major unit; lines end with CRLF';

const reportHttpQuery = z.object({
  from: z.string().describe('YYYY-MM-DD, from 1970-01-01 to 9999-12-30, inclusive, UTC'),
  to: z.string().describe('YYYY-MM-DD, inclusive, UTC, on or before 9999-12-30; at most 366 days from from'),
  groupBy: z.string().optional().describe(`Comma-separated: ${reportDimensions.join(', ')}`),
  campaignId: documentId.optional(),
  affiliateId: documentId.optional().describe("Only this affiliate's rows (an affiliate user: one of its own, else none)"),
  format: z.enum(['json', 'csv']).default('json'),
});

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Quote when needed, and defuse spreadsheet formulas in values that came from visitors (sub ids). A plain
  // number is no formula: a negative amount stays a number (-5.00), not text.
  const safe = /^[=+\-@\t\r]/.test(s) && !/^-\d+(\.\d+)?$/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

/** CSV for spreadsheets: money as decimals in the major unit, one column per currency. */
export function reportCsv(result: ReportResult, groupBy: string[]): string {
  const withRevenue = result.totals.revenue !== undefined;
  const currencies = [...new Set([...result.rows, result.totals].flatMap((r) => [...Object.keys(r.revenue ?? {}), ...Object.keys(r.payout)]))].sort();
  const money = (c: string) => (withRevenue ? [`revenue_${c}`, `payout_${c}`] : [`payout_${c}`]);
  const header = [...groupBy, 'clicks', 'uniqueClicks', 'botClicks', 'conversions', ...currencies.flatMap(money)];
  const line = (r: ReportResult['rows'][number]) => [
    ...groupBy.map((g) => (r as unknown as Record<string, unknown>)[g]),
    r.clicks, r.uniqueClicks, r.botClicks, r.conversions,
    ...currencies.flatMap((c) => (withRevenue ? [formatMinor(r.revenue?.[c] ?? 0, c)] : []).concat(formatMinor(r.payout[c] ?? 0, c))),
  ].map(csvCell).join(',');
  return [header.join(','), ...result.rows.map(line)].join('\r\n') + '\r\n';
}

export const reportRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/reports', summary: 'Clicks, unique and bot clicks, conversions, revenue and payout, grouped; money per currency in minor units', tag: 'Reports', permission: 'reports:read', query: reportHttpQuery, response: { json: reportResponse, csv: reportCsvDoc } },
    async ({ scope, query }): Promise<Reply> => {
      const groupBy = query.groupBy ? query.groupBy.split(',').map((g) => g.trim()).filter(Boolean) : [];
      const full = await analyticsStore().report(scope.reportQuery({ from: query.from, to: query.to, groupBy, campaignId: query.campaignId }, query.affiliateId));
      const result = { rows: full.rows.map((r) => withoutRevenueFor(scope, r)), totals: withoutRevenueFor(scope, full.totals) };
      if (query.format === 'csv') {
        return { status: 200, contentType: 'text/csv; charset=utf-8', body: reportCsv(result, groupBy), headers: { 'Content-Disposition': `attachment; filename="report-${query.from}-${query.to}.csv"` } };
      }
      return ok(result);
    },
  ),
];
