import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CloudEvent } from '@google-cloud/functions-framework';
import type { ClickEvent } from '../shared/domain/events';
import { analyticsTables } from '../shared/names';
import { startBigQueryStandIn, type BigQueryStandIn } from './helpers/bigquery-stand-in';
import { newOrg, startTestStack, type TestStack } from './helpers/stack';

/**
 * The platform on its production analytics backend: the real @google-cloud/bigquery client, as the analytics
 * worker and the API build it, talking to a local stand-in of BigQuery's REST API (BIGQUERY_EMULATOR_HOST).
 * No credentials: metadata-server detection is off (scripts/test.ts) and CLOUDSDK_CONFIG points at an empty
 * directory, so google-auth-library finds none without asking anyone, and the client sends its requests
 * unauthenticated to the stand-in; nothing leaves the machine.
 */
let s: TestStack;
let bq: BigQueryStandIn;
let gcloudConfig: string;
let writeAnalytics: (ce: CloudEvent<unknown>) => Promise<void>;
const table = () => `${process.env.GOOGLE_CLOUD_PROJECT}.abp_analytics.${analyticsTables.events}`;
const today = () => new Date().toISOString().slice(0, 10);
const timeoutSeconds = 1;

before(async () => {
  bq = await startBigQueryStandIn();
  gcloudConfig = mkdtempSync(join(tmpdir(), 'abp-no-gcloud-'));
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  s = await startTestStack({
    ANALYTICS_BACKEND: 'bigquery',
    BIGQUERY_EMULATOR_HOST: bq.url,
    BIGQUERY_QUERY_TIMEOUT_SECONDS: String(timeoutSeconds),
    CLOUDSDK_CONFIG: gcloudConfig,
  });
  ({ writeAnalytics } = await import('../functions/workers/analytics-writer'));
});

after(async () => {
  await s?.close();
  await bq?.close();
  rmSync(gcloudConfig, { recursive: true, force: true });
});

let seq = 0;
function click(sub1: string): ClickEvent {
  const id = `clk_bq_${process.pid}_${++seq}`;
  return {
    type: 'click', eventId: id, orgId: 'org_bq', linkId: 'lnk_bq', campaignId: 'cmp_bq', affiliateId: 'aff_bq',
    occurredAt: new Date().toISOString(), attributionWindowDays: 30, sub1, sub2: null, sub3: null, sub4: null, sub5: null,
    visitorHash: `v${seq}`, ipHash: 'i', ipPrefix: null, country: null, device: 'desktop', os: null, browser: null, referrer: null,
    isBot: false, botReason: null,
  };
}
/** A Pub/Sub delivery as the Functions Framework hands it to the worker. */
const delivery = (e: ClickEvent): CloudEvent<unknown> => ({
  id: `msg-${e.eventId}`, specversion: '1.0', type: 'google.cloud.pubsub.topic.v1.messagePublished', source: '//pubsub.googleapis.com/projects/p/topics/tracking-events',
  data: { message: { data: Buffer.from(JSON.stringify(e)).toString('base64'), messageId: `msg-${e.eventId}`, attributes: {} } },
});
/** The same delivery pushed over HTTP to the worker, as Pub/Sub does: a 2xx acknowledges it. */
const push = (e: ClickEvent) =>
  fetch(`${s.baseUrl}/_push/analytics-writer/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(e)).toString('base64'), messageId: `push-${e.eventId}`, attributes: {} } }),
  });
const storedIds = () => new Set(bq.rows(table()).map((r) => r.event_id));

describe('analytics worker on BigQuery', () => {
  it('stores the rows of a group beside one BigQuery finds invalid, in one insertAll and one retry, and fails only that row', async () => {
    const group = [click('a'), click('b'), click('poison'), click('c'), click('d'), click('e')];
    const poison = group[2]!;
    bq.refuseRows((row) => (row.event_id === poison.eventId ? { location: 'sub1', message: 'Value is not allowed here.' } : undefined));
    const before = bq.inserts().length;
    try {
      // Handed over in one turn, as concurrent deliveries are: one group.
      const outcomes = await Promise.allSettled(group.map((e) => writeAnalytics(delivery(e))));
      assert.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
      const requests = bq.inserts().slice(before);
      const ids = (i: number) => requests[i]!.body.rows.map((r: { insertId: string }) => r.insertId);
      assert.equal(requests.length, 2, 'the group, then its stopped rows together; not one request per row');
      const reason = String((outcomes[2] as PromiseRejectedResult).reason);
      assert.match(reason, new RegExp(`${poison.eventId}.*invalid at sub1: Value is not allowed here`));
      assert.deepEqual(ids(0), group.map((e) => e.eventId));
      assert.deepEqual(ids(1), group.filter((e) => e !== poison).map((e) => e.eventId));
      const stored = storedIds();
      for (const e of group) assert.equal(stored.has(e.eventId), e !== poison, e.sub1 ?? '');

      // Over HTTP, as Pub/Sub pushes: the refused row's delivery is not acknowledged (retried, then dead-lettered);
      // a good one is, and its row is stored.
      const [bad, good] = [await push(poison), await push(click('late'))];
      assert.ok(bad.status >= 500, `refused row answered ${bad.status}`);
      assert.ok(good.ok, `good row answered ${good.status}`);
    } finally {
      bq.refuseRows(undefined);
    }
  });

  it('fails every row of a group once when insertAll fails as a whole, without a request per row', async () => {
    const group = [click('x'), click('y'), click('z')];
    bq.failInserts({ status: 403, reason: 'accessDenied', message: 'Access Denied: Table: Permission bigquery.tables.updateData denied' });
    const before = bq.inserts().length;
    try {
      const outcomes = await Promise.allSettled(group.map((e) => writeAnalytics(delivery(e))));
      assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
      assert.equal(bq.inserts().length - before, 1, 'one request for the group, no row-by-row split');
      assert.match(String((outcomes[0] as PromiseRejectedResult).reason), /failed as a whole.*Access Denied/);
      for (const e of group) assert.ok(!storedIds().has(e.eventId));
    } finally {
      bq.failInserts({ status: 403, reason: 'accessDenied', message: '' }, 0);
    }
    // Redelivered once BigQuery takes requests again: stored.
    const again = await Promise.allSettled(group.map((e) => writeAnalytics(delivery(e))));
    assert.deepEqual(again.map((o) => o.status), ['fulfilled', 'fulfilled', 'fulfilled']);
    for (const e of group) assert.ok(storedIds().has(e.eventId));
  });
});

describe('reports on BigQuery', () => {
  let org: { orgId: string; token: string };
  before(async () => {
    org = await newOrg(s, 'bq-reports@example.com');
  });
  const report = (signal?: AbortSignal) =>
    fetch(`${s.baseUrl}/v1/orgs/${org.orgId}/reports?from=${today()}&to=${today()}&groupBy=day`, { headers: { authorization: `Bearer ${org.token}` }, signal });

  it('answers from the rows BigQuery returns, sending the query as a job with bound, typed parameters', async () => {
    bq.answerQueries(() => ({
      schema: ['dim_day', 'currency', 'clicks', 'unique_clicks', 'bot_clicks', 'conversions', 'revenue', 'payout'].map((name) => ({ name, type: /day|currency/.test(name) ? 'STRING' : 'INTEGER' })),
      rows: [
        [today(), null, '4', '3', '1', '0', '0', '0'],
        [today(), 'USD', '0', '0', '0', '1', '800', '500'],
      ],
    }));
    const res = await report();
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { totals?: unknown; error?: { code: string; message: string } };
    assert.deepEqual(body.totals, { clicks: 4, uniqueClicks: 3, botClicks: 1, conversions: 1, revenue: { USD: 800 }, payout: { USD: 500 } });
    const job = [...bq.jobs.values()].at(-1)!;
    const parameters = job.configuration.query.queryParameters as { name: string; parameterType: { type: string }; parameterValue: { value?: string } }[];
    assert.equal(parameters.find((p) => p.name === 'orgId')?.parameterValue.value, org.orgId);
    assert.ok(!String(job.configuration.query.query).includes(org.orgId), 'the organisation is a parameter, not SQL text');
  });

  it(`answers 503 naming the timeout when BigQuery takes longer than ${timeoutSeconds} s, and has BigQuery stop the job`, async () => {
    bq.answerQueries(() => ({ runMs: 10 * 60_000 }));
    const started = Date.now();
    // Without a bound the client would poll for the job's ten minutes.
    const res = await report(AbortSignal.timeout(15_000));
    const elapsed = Date.now() - started;
    assert.equal(res.status, 503);
    const body = (await res.json()) as { totals?: unknown; error?: { code: string; message: string } };
    assert.equal(body.error?.code, 'unavailable');
    assert.match(body.error?.message ?? '', new RegExp(`report did not finish within ${timeoutSeconds} s`));
    assert.ok(elapsed >= timeoutSeconds * 1000 && elapsed < timeoutSeconds * 1000 + 3000, `answered after ${elapsed} ms`);

    const job = [...bq.jobs.values()].at(-1)!;
    assert.equal(job.configuration.jobTimeoutMs, String(timeoutSeconds * 1000 + 5000), 'BigQuery stops the job itself, shortly after the API gave up');
    const waits = bq.requests.filter((r) => r.path.endsWith(`/queries/${job.jobId}`)).map((r) => r.query.timeoutMs);
    assert.deepEqual(waits, [String(timeoutSeconds * 1000)]);
  });
});
