import type { DocumentData, Query, Timestamp } from '@google-cloud/firestore';
import { z } from 'zod';
import { checkRange } from '../../../shared/analytics/report';
import { conversionStatuses } from '../../../shared/domain/events';
import { documentId, listQuery, metricsResource } from '../../../shared/domain/schemas';
import { config } from '../../../shared/config';
import { badRequest } from '../../../shared/errors';
import { withoutRevenueFor } from '../redaction';
import { ok, orgRoute } from '../router';

/** Reading the pipeline's output back: clicks and conversions from Firestore (live, per organisation). */
const day = z.iso.date();
const instant = z.union([z.iso.datetime(), z.iso.datetime({ precision: -1 })]);
/**
 * A real UTC day, or a UTC instant (seconds optional); an instant is normalised to the form createdAt is stored
 * in, since they are compared as strings (17:05Z would otherwise sort after 17:05:55.000Z).
 */
const isoDate = z
  .string()
  .refine((v) => day.safeParse(v).success || instant.safeParse(v).success, 'must be a date YYYY-MM-DD or a UTC timestamp like 2026-11-24T17:05:00Z')
  .transform((v) => (v.length === 10 ? v : new Date(v).toISOString()));
/** The last instant a `to` covers: a date means the whole day. */
const endOf = (to: string) => (to.length === 10 ? `${to}T23:59:59.999Z` : to);

export const clickResource = z
  .object({
    id: z.string(), linkId: z.string(), campaignId: z.string(), affiliateId: z.string(), createdAt: z.string(),
    sub1: z.string().nullable(), sub2: z.string().nullable(), sub3: z.string().nullable(), sub4: z.string().nullable(), sub5: z.string().nullable(),
    country: z.string().nullable(), device: z.string(), os: z.string().nullable(), browser: z.string().nullable(), ipPrefix: z.string().nullable(),
    isBot: z.boolean(), botReason: z.string().nullable(), unique: z.boolean(),
    expiresAt: z.string().describe('When Firestore\'s TTL policy deletes the click: the attribution window plus a margin'),
  })
  .meta({ id: 'Click' });

export const conversionResource = z
  .object({
    id: z.string(), clickId: z.string(), campaignId: z.string().nullable(), affiliateId: z.string().nullable(), linkId: z.string().nullable(),
    txnId: z.string().nullable(), event: z.string(), amount: z.number().nullable().describe('Minor units of currency'), currency: z.string(),
    revenue: z.number().optional().describe('What the advertiser owes, minor units (not shown to affiliate users)'), payout: z.number().describe("The affiliate's commission, minor units"),
    status: z.enum(conversionStatuses), reasons: z.array(z.string()), createdAt: z.string(),
  })
  .meta({ id: 'Conversion' });

const toClick = (d: DocumentData) => ({
  id: d.id, linkId: d.linkId, campaignId: d.campaignId, affiliateId: d.affiliateId, createdAt: d.createdAt,
  sub1: d.sub1, sub2: d.sub2, sub3: d.sub3, sub4: d.sub4, sub5: d.sub5, country: d.country, device: d.device, os: d.os, browser: d.browser,
  ipPrefix: d.ipPrefix, isBot: d.isBot, botReason: d.botReason, unique: d.unique,
  expiresAt: (d.expireAt as Timestamp).toDate().toISOString(),
});

export const toConversion = (d: DocumentData) => ({
  id: d.id, clickId: d.clickId, campaignId: d.campaignId, affiliateId: d.affiliateId, linkId: d.linkId, txnId: d.txnId, event: d.event,
  amount: d.amount, currency: d.currency, revenue: d.revenue, payout: d.payout, status: d.status, reasons: d.reasons, createdAt: d.createdAt,
});

const conversionsQuery = listQuery.extend({
  status: z.enum(conversionStatuses).optional(),
  campaignId: documentId.optional(),
  affiliateId: documentId.optional(),
  from: isoDate.optional().describe('A date YYYY-MM-DD or a UTC instant (2026-11-24T17:05:00Z), inclusive'),
  to: isoDate.optional().describe('A date YYYY-MM-DD or a UTC instant, inclusive; a date means the whole day'),
}).superRefine((q, ctx) => {
  if (q.from && q.to && q.from > endOf(q.to)) ctx.addIssue({ code: 'custom', path: ['to'], message: 'to must be on or after from' });
});

const statsQuery = z.object({
  from: z.iso.date({ error: 'must be a date YYYY-MM-DD' }),
  to: z.iso.date({ error: 'must be a date YYYY-MM-DD' }),
  campaignId: documentId.optional(),
  affiliateId: documentId.optional(),
}).superRefine(checkRange);

interface DayStats { clicks: number; uniqueClicks: number; botClicks: number; conversions: number; revenue: Record<string, number>; payout: Record<string, number> }
const emptyStats = (): DayStats => ({ clicks: 0, uniqueClicks: 0, botClicks: 0, conversions: 0, revenue: {}, payout: {} });

function addInto(into: DayStats, d: DocumentData): void {
  into.clicks += d.clicks ?? 0;
  into.uniqueClicks += d.uniqueClicks ?? 0;
  into.botClicks += d.botClicks ?? 0;
  into.conversions += d.conversions ?? 0;
  for (const key of ['revenue', 'payout'] as const) {
    for (const [currency, amount] of Object.entries((d[key] ?? {}) as Record<string, number>)) into[key][currency] = (into[key][currency] ?? 0) + amount;
  }
}

/** A currency appears once it has money, as in reports: a reversal takes a counter back to 0, not out. */
function withMoneyOnly(s: DayStats): DayStats {
  const money = (m: Record<string, number>) => Object.fromEntries(Object.entries(m).filter(([, v]) => v !== 0));
  return { ...s, revenue: money(s.revenue), payout: money(s.payout) };
}

export const trackingRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/stats', summary: 'Live counters by day from operational state (seconds behind); reports are the analytical view', tag: 'Tracking', permission: 'tracking:read', query: statsQuery, response: z.object({ days: z.array(metricsResource.extend({ day: z.string() })), totals: metricsResource }) },
    async ({ scope, query }) => {
      let q: Query = scope.collection('counters').where('day', '>=', query.from).where('day', '<=', query.to);
      if (query.campaignId) q = q.where('campaignId', '==', query.campaignId);
      if (query.affiliateId) q = q.where('affiliateId', '==', query.affiliateId);
      // Counter documents are per day, campaign, affiliate and shard: a year of a large network is millions, which
      // one request must not read. Past the cap the caller narrows the range or the filters, or asks the report.
      const maxCounterDocs = config().STATS_MAX_COUNTERS;
      q = q.select('day', 'clicks', 'uniqueClicks', 'botClicks', 'conversions', 'revenue', 'payout').limit(maxCounterDocs + 1);
      const snaps = await Promise.all(scope.narrow('counters', q, { affiliateId: query.affiliateId }).map((part) => part.get()));
      if (snaps.some((snap) => snap.size > maxCounterDocs)) {
        throw badRequest(`More than ${maxCounterDocs} live counters in this range: narrow it (from/to, campaignId, affiliateId), or ask GET /v1/orgs/{orgId}/reports`, [{ field: 'from', message: 'range too large for live stats' }]);
      }
      const byDay = new Map<string, DayStats>();
      const totals = emptyStats();
      for (const doc of snaps.flatMap((snap) => snap.docs)) {
        const d = doc.data();
        const entry = byDay.get(d.day) ?? emptyStats();
        addInto(entry, d);
        addInto(totals, d);
        byDay.set(d.day, entry);
      }
      const days = [...byDay.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([day, s]) => withoutRevenueFor(scope, { day, ...withMoneyOnly(s) }));
      return ok({ days, totals: withoutRevenueFor(scope, withMoneyOnly(totals)) });
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/clicks/:clickId', summary: 'A recorded click', tag: 'Tracking', permission: 'tracking:read', response: clickResource },
    async ({ scope, params }) => ok(toClick(await scope.getOrThrow<DocumentData>('clicks', params.clickId!, 'Click'))),
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/conversions', summary: 'Conversions, newest first', tag: 'Tracking', permission: 'tracking:read', query: conversionsQuery, response: z.object({ items: z.array(conversionResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const where: [string, '>=' | '<=', string][] = [];
      if (query.from) where.push(['createdAt', '>=', query.from]);
      if (query.to) where.push(['createdAt', '<=', endOf(query.to)]);
      const p = await scope.list<DocumentData>('conversions', { ...query, equals: { status: query.status, campaignId: query.campaignId, affiliateId: query.affiliateId }, where, newestFirstBy: 'createdAt' });
      return ok({ items: p.items.map((d) => withoutRevenueFor(scope, toConversion(d))), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/conversions/:id', summary: 'A conversion, with the reasons for its status', tag: 'Tracking', permission: 'tracking:read', response: conversionResource },
    async ({ scope, params }) => ok(withoutRevenueFor(scope, toConversion(await scope.getOrThrow<DocumentData>('conversions', params.id!, 'Conversion')))),
  ),
];
