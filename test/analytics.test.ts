import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BigQuery } from '@google-cloud/bigquery';
import { analyticsRow, type AnalyticsRow } from '../shared/analytics/schema';
import { parse as parseSql } from 'sql-parser-cst';
import { compileEventLookup, compileReport, maxReportRows, quoteTable, reportDimensions, reportQuerySchema, type ReportQuery, type ReportRow, type ScopedReportQuery } from '../shared/analytics/report';

/** The store's own tests stand in for OrgScope.reportQuery, which makes the only queries the port takes. */
const scoped = (q: ReportQuery) => q as ScopedReportQuery;
import { resetConfigForTests } from '../shared/config';
import { DuckDbAnalyticsStore } from '../functions/adapters/analytics/duckdb';
import { reportCsv } from '../functions/api/routes/reports';
import { BigQueryAnalyticsStore, type BigQueryClient } from '../functions/adapters/analytics/bigquery';
import { analyticsStore, closeAnalyticsStore } from '../functions/adapters/analytics/index';

/*
 * Analytics on the embedded DuckDB store (BigQuery has no emulator; its SQL is checked as text and parsed by a
 * GoogleSQL grammar, and its adapter against a fake client). Organisation A's fixture, reported over 2024-03-01..2024-03-02:
 *   L1 (campaign C1, affiliate A1), visitor V1: k1 10:00, k2 10:30 (30 min: not unique), bot 11:00,
 *     k3 11:31 (61 min after k2: unique; the bot click in between does not count)
 *   L2 (C1, A1), visitor V2: k5 02-29 23:50 (before the range), k6 03-01 00:10 (not unique: cross-midnight)
 *   L3 (C2, A2), visitor V3: k7 03-02 09:00; k9 03-03 (after the range)
 *   k8 02-20 on L1 with sub1 s-old: only a conversion's click
 *   v1 03-01 ← k1 USD 1000/300 (its own row says sub1 WRONG: the click's s-a wins); v2 03-02 ← k7 EUR 2000/500;
 *   v3 03-02 ← k7 rejected; v4 03-02 ← k8 USD 500/100
 * Organisation B reuses A's link, campaign, affiliate and visitor ids, and even cites A's click k1.
 */
const blank: AnalyticsRow = {
  event_id: '', event_type: 'click', org_id: '', occurred_at: '', event_date: '',
  link_id: null, campaign_id: null, affiliate_id: null, click_id: null,
  sub1: null, sub2: null, sub3: null, sub4: null, sub5: null, country: null, device: null,
  visitor_hash: null, is_bot: false, status: null, txn_id: null, currency: null, amount: null, revenue: 0, payout: 0,
  conversion_id: null, recorded_at: null,
};
const links = { L1: { link_id: 'L1', campaign_id: 'C1', affiliate_id: 'A1' }, L2: { link_id: 'L2', campaign_id: 'C1', affiliate_id: 'A1' }, L3: { link_id: 'L3', campaign_id: 'C2', affiliate_id: 'A2' } };
const at = (iso: string) => ({ occurred_at: `${iso}:00.000Z`, event_date: iso.slice(0, 10) });
const click = (org: string, id: string, when: string, o: Partial<AnalyticsRow>): AnalyticsRow =>
  analyticsRow.parse({ ...blank, event_id: id, org_id: org, ...at(when), ...o });
const conversion = (org: string, id: string, when: string, clickId: string, o: Partial<AnalyticsRow>): AnalyticsRow =>
  analyticsRow.parse({ ...blank, event_id: id, event_type: 'conversion', org_id: org, ...at(when), click_id: clickId, status: 'approved', ...o });

const A = 'org_a';
const B = 'org_b';
const orgA = [
  click(A, 'k1', '2024-03-01T10:00', { ...links.L1, visitor_hash: 'V1', sub1: 's-a', country: 'US', device: 'desktop' }),
  click(A, 'k2', '2024-03-01T10:30', { ...links.L1, visitor_hash: 'V1', sub1: 's-a' }),
  click(A, 'kbot', '2024-03-01T11:00', { ...links.L1, visitor_hash: 'V1', sub1: 's-a', is_bot: true, device: 'bot' }),
  click(A, 'k3', '2024-03-01T11:31', { ...links.L1, visitor_hash: 'V1', sub1: 's-a' }),
  click(A, 'k5', '2024-02-29T23:50', { ...links.L2, visitor_hash: 'V2' }),
  click(A, 'k6', '2024-03-01T00:10', { ...links.L2, visitor_hash: 'V2' }),
  click(A, 'k7', '2024-03-02T09:00', { ...links.L3, visitor_hash: 'V3', sub1: 's-b', country: 'DE', device: 'mobile' }),
  click(A, 'k8', '2024-02-20T08:00', { ...links.L1, visitor_hash: 'V9', sub1: 's-old' }),
  click(A, 'k9', '2024-03-03T09:00', { ...links.L3, visitor_hash: 'V3', sub1: 's-b' }),
  conversion(A, 'v1', '2024-03-01T10:20', 'k1', { ...links.L1, currency: 'USD', amount: 5000, revenue: 1000, payout: 300, sub1: 'WRONG', country: 'XX' }),
  conversion(A, 'v2', '2024-03-02T10:00', 'k7', { ...links.L3, currency: 'EUR', amount: 9000, revenue: 2000, payout: 500, status: 'pending' }),
  conversion(A, 'v3', '2024-03-02T11:00', 'k7', { ...links.L3, currency: 'USD', revenue: 9999, payout: 999, status: 'rejected' }),
  conversion(A, 'v4', '2024-03-02T12:00', 'k8', { ...links.L1, currency: 'USD', revenue: 500, payout: 100 }),
];
const orgB = [
  // Were organisations mixed, this would make A's k3 (11:31) a repeat click.
  click(B, 'b1', '2024-03-01T11:15', { ...links.L1, visitor_hash: 'V1', sub1: 's-a' }),
  conversion(B, 'b2', '2024-03-01T12:00', 'k1', { ...links.L1, currency: 'USD', revenue: 7777, payout: 777 }),
];
// The 60-minute boundary: exactly 60 minutes is a repeat, 61 is unique; other visitors and links are unique.
const C = 'org_c';
const orgC = [
  click(C, 'c1', '2024-05-01T10:00', { ...links.L1, visitor_hash: 'V1' }),
  click(C, 'c2', '2024-05-01T11:00', { ...links.L1, visitor_hash: 'V1' }),
  click(C, 'c3', '2024-05-01T12:01', { ...links.L1, visitor_hash: 'V1' }),
  click(C, 'c4', '2024-05-01T12:05', { ...links.L1, visitor_hash: 'V2' }),
  click(C, 'c5', '2024-05-01T12:06', { ...links.L2, visitor_hash: 'V1' }),
  click(C, 'c6', '2024-05-01T12:10', { ...links.L1, visitor_hash: null }),
];

const metrics = (clicks: number, uniqueClicks: number, botClicks: number, conversions: number, revenue: Record<string, number> = {}, payout: Record<string, number> = {}) => ({
  clicks, uniqueClicks, botClicks, conversions, revenue, payout,
});
const range = { from: '2024-03-01', to: '2024-03-02' };
const aTotals = metrics(5, 3, 1, 3, { USD: 1500, EUR: 2000 }, { USD: 400, EUR: 500 });

describe('analytics on DuckDB', () => {
  let dir: string;
  let store: DuckDbAnalyticsStore;
  const report = (q: Partial<ReportQuery> & { orgId: string }) => store.report(scoped({ ...range, groupBy: [], ...q }));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'abp-analytics-'));
    store = new DuckDbAnalyticsStore(join(dir, 'nested', 'analytics.duckdb'));
    await store.insert([...orgA, ...orgB]);
    await store.insert(orgC);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads rows back by event id, only within the organisation', async () => {
    assert.deepEqual(await store.getEvents(A, ['v1', 'k1', 'b1', 'missing']), [orgA[0], orgA[9]]);
    assert.deepEqual(await store.getEvents(B, ['k1', 'v1']), []);
    assert.deepEqual(await store.getEvents(A, []), []);
  });

  it('groups by day', async () => {
    const r = await report({ orgId: A, groupBy: ['day'] });
    assert.deepEqual(r.rows, [
      { day: '2024-03-01', ...metrics(4, 2, 1, 1, { USD: 1000 }, { USD: 300 }) },
      { day: '2024-03-02', ...metrics(1, 1, 0, 2, { EUR: 2000, USD: 500 }, { EUR: 500, USD: 100 }) },
    ]);
    assert.deepEqual(r.totals, aTotals);
  });

  it('groups by campaign, keeping currencies apart', async () => {
    const r = await report({ orgId: A, groupBy: ['campaign'] });
    assert.deepEqual(r.rows, [
      { campaign: 'C1', ...metrics(4, 2, 1, 2, { USD: 1500 }, { USD: 400 }) },
      { campaign: 'C2', ...metrics(1, 1, 0, 1, { EUR: 2000 }, { EUR: 500 }) },
    ]);
    assert.deepEqual(r.totals.revenue, { USD: 1500, EUR: 2000 });
    assert.deepEqual(r.totals.payout, { USD: 400, EUR: 500 });
  });

  it('groups by sub1, taking a conversion\'s sub1 from its click, even one older than the range', async () => {
    const r = await report({ orgId: A, groupBy: ['sub1'] });
    assert.deepEqual(r.rows, [
      { sub1: 's-a', ...metrics(3, 2, 1, 1, { USD: 1000 }, { USD: 300 }) },
      { sub1: 's-b', ...metrics(1, 1, 0, 1, { EUR: 2000 }, { EUR: 500 }) },
      { sub1: 's-old', ...metrics(0, 0, 0, 1, { USD: 500 }, { USD: 100 }) },
      { sub1: null, ...metrics(1, 0, 0, 0) },
    ]);
    assert.deepEqual(r.totals, aTotals);
  });

  it('takes day and campaign from the conversion row and country from the click, across several dimensions', async () => {
    const r = await report({ orgId: A, groupBy: ['day', 'campaign', 'country'] });
    assert.deepEqual(r.rows, [
      { day: '2024-03-01', campaign: 'C1', country: 'US', ...metrics(1, 1, 0, 1, { USD: 1000 }, { USD: 300 }) },
      { day: '2024-03-01', campaign: 'C1', country: null, ...metrics(3, 1, 1, 0) },
      { day: '2024-03-02', campaign: 'C1', country: null, ...metrics(0, 0, 0, 1, { USD: 500 }, { USD: 100 }) },
      { day: '2024-03-02', campaign: 'C2', country: 'DE', ...metrics(1, 1, 0, 1, { EUR: 2000 }, { EUR: 500 }) },
    ]);
  });

  it('returns one row equal to the totals without a group-by, even with no data', async () => {
    const r = await report({ orgId: A });
    assert.deepEqual(r.rows, [aTotals]);
    assert.deepEqual(r.totals, aTotals);
    const empty = await report({ orgId: 'org_nobody' });
    assert.deepEqual(empty.rows, [metrics(0, 0, 0, 0)]);
    assert.deepEqual((await report({ orgId: 'org_nobody', groupBy: ['day'] })).rows, []);
  });

  it('counts bot clicks apart and never lets them decide uniqueness', async () => {
    const r = await report({ orgId: A, from: '2024-03-01', to: '2024-03-01', groupBy: ['link', 'device'] });
    assert.deepEqual(r.rows, [
      { link: 'L1', device: 'bot', ...metrics(0, 0, 1, 0) },
      { link: 'L1', device: 'desktop', ...metrics(1, 1, 0, 1, { USD: 1000 }, { USD: 300 }) },
      { link: 'L1', device: null, ...metrics(2, 1, 0, 0) },
      { link: 'L2', device: null, ...metrics(1, 0, 0, 0) },
    ]);
  });

  it('applies the 60-minute unique-click rule, across midnight too', async () => {
    const byLink = await report({ orgId: A, from: '2024-03-01', to: '2024-03-01', groupBy: ['link'] });
    // L1: 30 min → repeat, 61 min → unique. L2: 00:10 after 23:50 the day before → repeat.
    assert.deepEqual(byLink.rows.map((r) => [r.link, r.clicks, r.uniqueClicks]), [['L1', 3, 2], ['L2', 1, 0]]);
    const boundary = await store.report(scoped({ orgId: C, from: '2024-05-01', to: '2024-05-01', groupBy: [] }));
    assert.deepEqual(boundary.totals, metrics(6, 5, 0, 0));
    // Without the earlier click in the table, the 00:10 click is unique: the look-back is what decided.
    const dir2 = mkdtempSync(join(tmpdir(), 'abp-analytics-'));
    const alone = new DuckDbAnalyticsStore(join(dir2, 'analytics.duckdb'));
    try {
      await alone.insert(orgA.filter((r) => r.event_id === 'k6'));
      assert.deepEqual((await alone.report(scoped({ orgId: A, ...range, groupBy: [] }))).totals, metrics(1, 1, 0, 0));
    } finally {
      await alone.close();
      rmSync(dir2, { recursive: true, force: true });
    }
  });

  it('excludes rejected conversions', async () => {
    const r = await report({ orgId: A, groupBy: ['day'] });
    assert.equal(r.rows[1]?.conversions, 2);
    assert.equal(r.totals.revenue.USD, 1500, 'the rejected 9999 USD is not counted');
  });

  it('counts each conversion once, as its latest version says', async () => {
    const D = 'org_d';
    const version = (id: string, conversionId: string, status: string, payout: number, recorded: string) =>
      conversion(D, id, '2024-06-01T10:00', 'kd', { ...links.L1, currency: 'USD', revenue: 1000, payout, status, conversion_id: conversionId, recorded_at: `${recorded}:00.000Z` });
    await store.insert([
      // Approved at a higher tier: counted once, at the approved payout.
      version('d1', 'd1', 'pending', 300, '2024-06-01T10:00'), version('d1-approved', 'd1', 'approved', 400, '2024-06-09T10:00'),
      // Rejected later, and approved then reversed (refunded): not counted.
      version('d2', 'd2', 'pending', 300, '2024-06-01T10:00'), version('d2-rejected', 'd2', 'rejected', 300, '2024-06-02T10:00'),
      version('d3', 'd3', 'pending', 300, '2024-06-01T10:00'), version('d3-approved', 'd3', 'approved', 300, '2024-06-05T10:00'),
      version('d3-reversed', 'd3', 'reversed', 300, '2024-06-20T10:00'),
      // Versions that arrive out of order: the latest recorded stands, not the last inserted.
      version('d4-approved', 'd4', 'approved', 300, '2024-06-05T10:00'), version('d4', 'd4', 'pending', 250, '2024-06-01T10:00'),
    ]);
    const r = await report({ orgId: D, from: '2024-06-01', to: '2024-06-01' });
    assert.deepEqual(r.totals, metrics(0, 0, 0, 2, { USD: 2000 }, { USD: 700 }));
  });

  it('shows a currency once it has money, as the live stats do: a conversion counted at a zero payout adds none', async () => {
    const E = 'org_e';
    await store.insert([conversion(E, 'e1', '2024-07-01T10:00', 'ke', { ...links.L1, currency: 'EUR', revenue: 1200, payout: 0 })]);
    const r = await report({ orgId: E, from: '2024-07-01', to: '2024-07-01', groupBy: ['day'] });
    assert.deepEqual(r.totals, metrics(0, 0, 0, 1, { EUR: 1200 }, {}));
    assert.deepEqual([r.rows[0]?.revenue, r.rows[0]?.payout], [{ EUR: 1200 }, {}]);
  });

  it('refuses, naming the range, a report whose sums pass 2^53 rather than answer a 500 or an inexact total', async () => {
    const big = 'org_big';
    // Each under 2^53, as rows of the past may be; their sum is not (the intake now refuses any one sale over 10^12).
    await store.insert([1, 2].map((n) => conversion(big, `big${n}`, `2024-09-0${n}T10:00`, 'kb', { ...links.L1, currency: 'USD', revenue: 5e15, payout: 1 })));
    const oneDay = await report({ orgId: big, from: '2024-09-01', to: '2024-09-01' });
    assert.deepEqual(oneDay.totals.revenue, { USD: 5e15 });
    for (const groupBy of [[], ['day']] as const) {
      await assert.rejects(report({ orgId: big, from: '2024-09-01', to: '2024-09-02', groupBy: [...groupBy] }), (err: { code?: string; details?: { field: string }[] }) => err.code === 'bad_request' && err.details?.[0]?.field === 'to');
    }
  });

  it('filters by affiliate and by campaign', async () => {
    assert.deepEqual((await report({ orgId: A, affiliateIds: ['A2'] })).totals, metrics(1, 1, 0, 1, { EUR: 2000 }, { EUR: 500 }));
    assert.deepEqual((await report({ orgId: A, affiliateIds: ['A1', 'A2'] })).totals, aTotals);
    assert.deepEqual((await report({ orgId: A, affiliateIds: [] })).totals, metrics(0, 0, 0, 0), 'an empty list keeps nothing');
    assert.deepEqual((await report({ orgId: A, campaignId: 'C1' })).totals, metrics(4, 2, 1, 2, { USD: 1500 }, { USD: 400 }));
    assert.deepEqual((await report({ orgId: A, campaignId: 'C2', affiliateIds: ['A1'] })).totals, metrics(0, 0, 0, 0));
  });

  it('never shows another organisation\'s rows', async () => {
    const b = await report({ orgId: B, groupBy: ['sub1'] });
    // b2 cites A's click k1, but attribution stays inside B: no sub1.
    assert.deepEqual(b.rows, [
      { sub1: 's-a', ...metrics(1, 1, 0, 0) },
      { sub1: null, ...metrics(0, 0, 0, 1, { USD: 7777 }, { USD: 777 }) },
    ]);
    const a = await report({ orgId: A, groupBy: ['sub1'] });
    assert.ok(!JSON.stringify(a).includes('7777'));
  });

  it('is idempotent on event_id: inserting the same rows again changes nothing', async () => {
    const before = await Promise.all([report({ orgId: A, groupBy: ['day'] }), report({ orgId: B }), report({ orgId: C, from: '2024-05-01', to: '2024-05-01' })]);
    const changedCopy = { ...orgA[9]!, revenue: 1, payout: 1, currency: 'GBP' };
    await store.insert([...orgA, ...orgA, changedCopy, ...orgB]);
    await store.insert(orgC);
    const again = await Promise.all([report({ orgId: A, groupBy: ['day'] }), report({ orgId: B }), report({ orgId: C, from: '2024-05-01', to: '2024-05-01' })]);
    assert.deepEqual(again, before);
    assert.deepEqual(await store.getEvents(A, ['v1']), [orgA[9]], 'the first copy of an event wins');
  });

  it('takes concurrent inserts and reports without losing or doubling a row', async () => {
    const extra = Array.from({ length: 1000 }, (_, i) =>
      click('org_load', `load-${i}`, `2024-06-01T${String(Math.floor(i / 60) % 24).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}`, { ...links.L1, visitor_hash: `V${i}` }),
    );
    await Promise.all([
      store.insert(extra.slice(0, 500)),
      store.report(scoped({ orgId: A, ...range, groupBy: ['day'] })),
      store.insert(extra.slice(500)),
      store.insert(extra.slice(250, 750)),
    ]);
    assert.deepEqual((await store.report(scoped({ orgId: 'org_load', from: '2024-06-01', to: '2024-06-01', groupBy: [] }))).totals, metrics(1000, 1000, 0, 0));
  });

  it("takes a conversion's country from its click a few minutes later, past the range's end (clock skew)", async () => {
    const E = 'org_skew';
    await store.insert([
      click(E, 'skew-k', '2024-08-02T00:01', { ...links.L1, visitor_hash: 'S1', country: 'FR' }),
      conversion(E, 'skew-v', '2024-08-01T23:58', 'skew-k', { ...links.L1, currency: 'USD', revenue: 100, payout: 10 }),
    ]);
    const r = await store.report(scoped({ orgId: E, from: '2024-08-01', to: '2024-08-01', groupBy: ['country'] }));
    assert.deepEqual(r.rows.map((x) => [x.country, x.conversions, x.clicks]), [['FR', 1, 0]]);
  });

  it('refuses, naming groupBy, a report of more rows than it answers, and answers one of exactly that many', async () => {
    // A sub id filled per click (a gclid, say): a row per click.
    const perClick = (n: number, org: string) => Array.from({ length: n }, (_, i) => click(org, `${org}-g-${i}`, '2024-07-01T10:00', { ...links.L1, visitor_hash: `G${i}`, sub1: `gclid-${i}` }));
    await store.insert(perClick(maxReportRows + 1, 'org_tail'));
    await store.insert(perClick(maxReportRows, 'org_full'));
    const q = { from: '2024-07-01', to: '2024-07-01', groupBy: ['sub1' as const] };
    await assert.rejects(store.report(scoped({ orgId: 'org_tail', ...q })), (err: { code?: string; details?: { field: string }[] }) => err.code === 'bad_request' && err.details?.[0]?.field === 'groupBy');
    assert.equal((await store.report(scoped({ orgId: 'org_full', ...q }))).rows.length, maxReportRows);
    assert.equal((await store.report(scoped({ orgId: 'org_tail', from: q.from, to: q.to, groupBy: ['day'] }))).totals.clicks, maxReportRows + 1, 'grouped by day it is one row');
    // Rows are groups, whatever the query returns for them: a group with clicks and sales in two currencies is one.
    const mixed = 'org_mixed';
    const n = Math.ceil(maxReportRows / 2) + 1;
    await store.insert(Array.from({ length: n }, (_, i) => [
      click(mixed, `${mixed}-k${i}`, '2024-07-01T10:00', { ...links.L1, visitor_hash: `M${i}`, sub1: `s-${i}` }),
      conversion(mixed, `${mixed}-u${i}`, '2024-07-01T10:05', `${mixed}-k${i}`, { ...links.L1, sub1: `s-${i}`, currency: 'USD', revenue: 100, payout: 10 }),
      conversion(mixed, `${mixed}-e${i}`, '2024-07-01T10:06', `${mixed}-k${i}`, { ...links.L1, sub1: `s-${i}`, currency: 'EUR', revenue: 100, payout: 10 }),
    ]).flat());
    const mixedReport = await store.report(scoped({ orgId: mixed, ...q }));
    assert.deepEqual([mixedReport.rows.length, mixedReport.totals.clicks, mixedReport.totals.conversions], [n, n, 2 * n]);
  });
});

describe('report as CSV', () => {
  it('quotes and defuses what visitors typed, keeps negative amounts numbers, and writes each currency in its own units', () => {
    const row = (sub1: string, payout: Record<string, number>) => ({ sub1, ...metrics(1, 1, 0, 1, {}, payout) });
    const csv = reportCsv({ rows: [row('=HYPERLINK("x")', { USD: -500 }), row('a,"b"', { JPY: 1200 }), row('-not-a-number', { KWD: 1234 })], totals: metrics(3, 3, 0, 3, {}, {}) }, ['sub1']);
    assert.equal(csv, [
      'sub1,clicks,uniqueClicks,botClicks,conversions,revenue_JPY,payout_JPY,revenue_KWD,payout_KWD,revenue_USD,payout_USD',
      `"'=HYPERLINK(""x"")",1,1,0,1,0,0,0.000,0.000,0.00,-5.00`,
      '"a,""b""",1,1,0,1,0,1200,0.000,0.000,0.00,0.00',
      "'-not-a-number,1,1,0,1,0,0,0.000,1.234,0.00,0.00",
      '',
    ].join('\r\n'));
  });
});

describe('report definition and SQL', () => {
  const secret: ReportQuery = {
    orgId: 'org-secret-42', from: '2031-07-15', to: '2031-07-20', groupBy: ['day', 'sub1'], affiliateIds: ['aff-secret'], campaignId: 'camp-secret',
  };

  it('compiles BigQuery SQL with @named parameters and the backticked table, and no value from the query', () => {
    const { sql, params, types } = compileReport(secret, 'bigquery', 'my-project.abp_analytics.tracking_events');
    assert.ok(sql.includes('FROM `my-project.abp_analytics.tracking_events`'));
    for (const p of ['@orgId', '@fromDate', '@toDate', '@lookbackDate', '@attributedFromDate', '@attributedToDate', '@campaignId', 'IN UNNEST(@affiliateIds)']) assert.ok(sql.includes(p), p);
    for (const v of ['org-secret-42', 'aff-secret', 'camp-secret', '2031', '2030']) assert.ok(!sql.includes(v), `${v} is not in the SQL`);
    assert.ok(!sql.includes('$'));
    assert.deepEqual(params, {
      orgId: 'org-secret-42', fromDate: '2031-07-15', toDate: '2031-07-20', lookbackDate: '2031-07-14', affiliateIds: ['aff-secret'], campaignId: 'camp-secret',
      // A conversion's click is looked for from a year and a day before the range to a day after it.
      attributedFromDate: '2030-07-14', attributedToDate: '2031-07-21',
    });
    assert.equal(types.affiliateIds, 'ARRAY<STRING>');
  });

  it('compiles DuckDB SQL with $named parameters and no value from the query', () => {
    const { sql, params } = compileReport(secret, 'duckdb', 'tracking_events');
    assert.ok(sql.includes('FROM "tracking_events"'));
    assert.ok(sql.includes('list_contains($affiliateIds,'));
    for (const v of ['org-secret-42', 'aff-secret', 'camp-secret', '2031', '@']) assert.ok(!sql.includes(v), `${v} is not in the SQL`);
    assert.equal(params.orgId, 'org-secret-42');
  });

  it('only splices table names that match a strict pattern', () => {
    assert.throws(() => quoteTable('p.d.t` WHERE 1=1 --', 'bigquery'), /invalid BigQuery table/);
    assert.throws(() => quoteTable('t"; DROP TABLE x; --', 'duckdb'), /invalid DuckDB table/);
    assert.throws(() => compileReport({ ...secret, groupBy: ['day', 'nope' as 'day'] }, 'duckdb', 'tracking_events'));
  });

  it('gives BigQuery a type for every parameter, even an empty array', () => {
    const { params, types } = compileReport({ ...secret, affiliateIds: [] }, 'bigquery', 'p.d.t');
    for (const [name, value] of Object.entries(params)) {
      const t = types[name] === 'ARRAY<STRING>' ? ['STRING'] : types[name]!;
      const p = BigQuery.valueToQueryParameter_(value, t);
      assert.equal(p.parameterType?.type, Array.isArray(value) ? 'ARRAY' : 'STRING', name);
    }
  });

  it('validates queries, naming the field', () => {
    const issues = (q: object) => {
      const r = reportQuerySchema.safeParse({ orgId: A, ...q });
      return r.success ? [] : r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
    };
    const reversed = issues({ from: '2024-03-05', to: '2024-03-01' });
    assert.equal(reversed.length, 1);
    assert.equal(reversed[0]!.path, 'to');
    assert.match(reversed[0]!.message, /\bto\b.*\bfrom\b/);
    const tooLong = issues({ from: '2024-01-01', to: '2025-01-01' });
    assert.equal(tooLong[0]?.path, 'to');
    assert.match(tooLong[0]!.message, /366 days/);
    assert.deepEqual(issues({ from: '2024-01-01', to: '2024-12-31' }), [], 'a whole leap year is allowed');
    const badDate = issues({ from: '2024-3-1', to: '2024-03-02' });
    assert.deepEqual(badDate.map((i) => i.path), ['from']);
    assert.match(badDate[0]!.message, /^from /);
    assert.equal(issues({ from: '2024-02-30', to: '2024-03-02' })[0]?.path, 'from');
    assert.deepEqual(issues({ ...range, groupBy: ['day', 'day'] }).map((i) => i.path), ['groupBy']);
    assert.deepEqual(issues({ ...range, groupBy: ['hour'] }).map((i) => i.path), ['groupBy.0']);
    assert.deepEqual(reportQuerySchema.parse({ orgId: A, ...range }).groupBy, []);
  });

  /*
   * BigQuery has no emulator, so the SQL it would run is at least parsed by a GoogleSQL grammar
   * (sql-parser-cst, a test-only dependency, never bundled). Its grammar lacks `NULLS FIRST|LAST`, which
   * BigQuery documents for ORDER BY, so those two words are checked on every ORDER BY item and taken out before
   * parsing.
   */
  const parseAsGoogleSql = (sql: string) => {
    const orderBy = /\nORDER BY (.*)\n/.exec(sql)?.[1];
    if (orderBy && sql.includes('NULLS')) for (const item of orderBy.split(', ')) assert.match(item, / (ASC|DESC) NULLS (FIRST|LAST)$/, item);
    parseSql(sql.replace(/ NULLS (FIRST|LAST)\b/g, ''), { dialect: 'bigquery', paramTypes: ['@name'] });
  };

  it('compiles to SQL that parses as GoogleSQL, for every dimension and filter', () => {
    const queries: ReportQuery[] = [
      { ...secret, groupBy: [] },
      { ...secret, groupBy: [...reportDimensions] },
      { ...secret, groupBy: [], affiliateIds: undefined, campaignId: undefined },
      { ...secret, groupBy: ['country', 'day'], affiliateIds: [] },
      ...reportDimensions.map((d): ReportQuery => ({ ...secret, groupBy: [d] })),
    ];
    for (const q of queries) {
      const { sql } = compileReport(q, 'bigquery', 'my-project.abp_analytics.tracking_events');
      assert.doesNotThrow(() => parseAsGoogleSql(sql), `groupBy ${q.groupBy.join(',') || '(none)'}`);
    }
    assert.doesNotThrow(() => parseAsGoogleSql(compileEventLookup('bigquery', 'p.d.t', 'org', ['e1', 'e2']).sql));
    // The grammar is GoogleSQL's, not any SQL: the same report in DuckDB's dialect, or with a unit BigQuery spells otherwise, is refused.
    const { sql } = compileReport({ ...secret, groupBy: ['day'] }, 'bigquery', 'p.d.t');
    assert.throws(() => parseAsGoogleSql(compileReport({ ...secret, groupBy: ['day'] }, 'duckdb', 't').sql), /Syntax Error/);
    assert.throws(() => parseAsGoogleSql(sql.replace('INTERVAL 60 MINUTE', 'INTERVAL 60 MINUTES')), /Syntax Error/);
  });
});

describe('BigQuery adapter (fake client)', () => {
  it('streams rows with insertId = event_id, and queries with bound, typed parameters', async () => {
    const inserts: { rows: object[]; options: object }[] = [];
    const queries: Parameters<BigQueryClient['query']>[0][] = [];
    const client: BigQueryClient = {
      dataset: (ds) => ({
        table: (t) => ({
          insert: async (rows, options) => {
            assert.equal(`${ds}.${t}`, 'abp_analytics.tracking_events');
            inserts.push({ rows, options });
          },
        }),
      }),
      query: async (q) => {
        queries.push(q);
        return [[
          { dim_day: '2024-03-01', currency: null, clicks: 4, unique_clicks: 2, bot_clicks: 1, conversions: 0, revenue: 0, payout: 0 },
          { dim_day: '2024-03-01', currency: 'USD', clicks: 0, unique_clicks: 0, bot_clicks: 0, conversions: 1, revenue: 1000, payout: 300 },
        ]];
      },
    };
    const bq = new BigQueryAnalyticsStore({ projectId: 'my-project', dataset: 'abp_analytics', client });
    await bq.insert(orgA.slice(0, 2));
    assert.deepEqual(inserts, [{ rows: [{ insertId: 'k1', json: orgA[0] }, { insertId: 'k2', json: orgA[1] }], options: { raw: true, partialRetries: 0 } }]);
    const r = await bq.report(scoped({ orgId: A, ...range, groupBy: ['day'], affiliateIds: [] }));
    assert.deepEqual(r.rows, [{ day: '2024-03-01', ...metrics(4, 2, 1, 1, { USD: 1000 }, { USD: 300 }) }] satisfies ReportRow[]);
    assert.equal(queries.length, 1);
    assert.ok(queries[0]!.query.includes('`my-project.abp_analytics.tracking_events`'));
    assert.ok(!queries[0]!.query.includes(A));
    assert.equal(queries[0]!.params.orgId, A);
    assert.deepEqual(queries[0]!.types.affiliateIds, ['STRING']);
    await bq.close();
  });
});

describe('analyticsStore()', () => {
  const saved = { ...process.env };
  after(() => {
    process.env = saved;
    resetConfigForTests();
  });

  it('is a process-wide DuckDB store by default that persists to ABP_DATA_DIR across close()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'abp-analytics-'));
    try {
      process.env.ABP_DATA_DIR = dir;
      delete process.env.ANALYTICS_BACKEND;
      resetConfigForTests();
      const first = analyticsStore();
      assert.ok(first instanceof DuckDbAnalyticsStore);
      assert.equal(analyticsStore(), first);
      await first.insert(orgA.slice(0, 1));
      await closeAnalyticsStore();
      await assert.rejects(first.getEvents(A, ['k1']), /closed/);
      const second = analyticsStore();
      assert.notEqual(second, first);
      assert.deepEqual(await second.getEvents(A, ['k1']), orgA.slice(0, 1));
      await closeAnalyticsStore();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('chooses BigQuery from config without connecting anywhere', async () => {
    process.env.ANALYTICS_BACKEND = 'bigquery';
    process.env.GOOGLE_CLOUD_PROJECT = 'abp-prod';
    process.env.BIGQUERY_DATASET = 'analytics_ds';
    resetConfigForTests();
    const s = analyticsStore();
    assert.ok(s instanceof BigQueryAnalyticsStore);
    assert.equal(s.table, 'abp-prod.analytics_ds.tracking_events');
    await closeAnalyticsStore();
  });
});
