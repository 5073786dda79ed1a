import assert from 'node:assert/strict';
import { after, before, describe, it, mock } from 'node:test';
import { z } from 'zod';
import { replyMismatches } from '../functions/api/reply-check';
import { parseConfig } from '../shared/config';
import { moneyOrgs, type MoneyOrg } from './helpers/money-org';
import { startTestStack, type TestStack } from './helpers/stack';

/**
 * The OpenAPI document describes every success answer, and the test stacks hold each reply to it: a reply its
 * route's documented response does not describe is a 500 naming the route and the difference.
 */
let s: TestStack;
const { setupOrg, convert, patch } = moneyOrgs(() => s);

before(async () => {
  s = await startTestStack();
});
after(() => s.close());

/** An organisation whose affiliate was onboarded (dry-run provider) and paid once: a run, a payout, its entries. */
async function paidOrg(email: string): Promise<{ org: MoneyOrg; runId: string; payoutId: string; onboarding: Awaited<ReturnType<TestStack['call']>> }> {
  const org = await setupOrg(email);
  const conversion = await convert(org, `${email}-1`);
  assert.equal((await patch(org, conversion, { status: 'approved' })).status, 200);
  const onboarding = await s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token });
  assert.equal(onboarding.status, 200, onboarding.text);
  const run = await s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body: {} });
  assert.equal(run.status, 201, run.text);
  assert.equal(run.body.payouts.length, 1);
  return { org, runId: run.body.id, payoutId: run.body.payouts[0].id, onboarding };
}

describe('the OpenAPI document', () => {
  it('documents what every route answers, the payout-run list, payout statement and Stripe onboarding included', async () => {
    const doc = (await s.call('GET', '/v1/openapi.json')).body;
    const success = (op: { responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }> }) =>
      Object.entries(op.responses).filter(([code]) => code.startsWith('2'));
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Parameters<typeof success>[0]>>)) {
      for (const [method, op] of Object.entries(ops)) {
        const answers = success(op);
        assert.equal(answers.length, 1, `${method} ${path} documents one success answer`);
        assert.ok(answers[0]![1].content, `${method} ${path} documents its success body`);
      }
    }
    const schemas = doc.components.schemas;
    const json = (path: string, method: string, code = '200') => doc.paths[path][method].responses[code].content['application/json'].schema;

    const list = json('/v1/orgs/{orgId}/payout-runs', 'get');
    assert.deepEqual(list.required.sort(), ['items', 'nextCursor']);
    assert.equal(list.properties.items.items.$ref, '#/components/schemas/PayoutRunSummary');
    assert.deepEqual(schemas.PayoutRunSummary.required.sort(), ['completedAt', 'createdAt', 'id', 'status', 'trigger']);
    assert.equal(schemas.PayoutRunSummary.properties.payouts, undefined, 'the list shows runs without their payouts');

    const statement = doc.paths['/v1/orgs/{orgId}/payouts/{id}/statement'].get.responses['200'].content;
    assert.deepEqual(Object.keys(statement).sort(), ['application/json', 'text/csv']);
    assert.equal(statement['application/json'].schema.$ref, '#/components/schemas/PayoutStatement');
    assert.equal(schemas.PayoutStatement.properties.payout.$ref, '#/components/schemas/Payout');
    assert.equal(schemas.PayoutStatement.properties.entries.items.$ref, '#/components/schemas/LedgerEntry');
    assert.equal(statement['text/csv'].schema.type, 'string');
    assert.match(statement['text/csv'].schema.description, /entryId,conversionId,campaignId,type,amount,currency,createdAt/);

    assert.equal(json('/v1/orgs/{orgId}/affiliates/{id}/stripe/onboarding', 'post').$ref, '#/components/schemas/StripeOnboarding');
    assert.deepEqual(schemas.StripeOnboarding.required.sort(), ['affiliate', 'expiresAt', 'url']);
    assert.equal(schemas.StripeOnboarding.properties.affiliate.$ref, '#/components/schemas/Affiliate');

    // The report's CSV is documented where it is answered, too; failures of no one operation under `default`.
    assert.ok(doc.paths['/v1/orgs/{orgId}/reports'].get.responses['200'].content['text/csv']);
    assert.equal(doc.paths['/v1/orgs/{orgId}/payout-runs'].get.responses.default.content['application/json'].schema.$ref, '#/components/schemas/Error');
  });

  it('matches what those three routes answer (the test stack checks each reply against it)', async () => {
    const { org, runId, payoutId, onboarding } = await paidOrg('documented@example.com');
    assert.match(onboarding.body.url, /^https?:\/\//);
    assert.equal(onboarding.body.affiliate.id, org.affiliate);

    const runs = await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token });
    assert.equal(runs.status, 200, runs.text);
    assert.deepEqual(runs.body.items.map((r: { id: string; status: string }) => [r.id, r.status]), [[runId, 'completed']]);

    const statement = await s.call('GET', `/v1/orgs/${org.id}/payouts/${payoutId}/statement`, { auth: org.token });
    assert.equal(statement.status, 200, statement.text);
    assert.equal(statement.body.payout.id, payoutId);
    assert.equal(statement.body.entries.length, 1);

    const csv = await s.call('GET', `/v1/orgs/${org.id}/payouts/${payoutId}/statement?format=csv`, { auth: org.token });
    assert.equal(csv.status, 200, csv.text);
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    assert.equal(csv.text.split('\r\n')[0], 'entryId,conversionId,campaignId,type,amount,currency,createdAt');
  });

  it('matches what the routes no other test file reaches with a success answer: a link by id, a report as CSV', async () => {
    const org = await setupOrg('rest@example.com');
    const link = await s.call('GET', `/v1/orgs/${org.id}/links/${org.link}`, { auth: org.token });
    assert.equal(link.status, 200, link.text);
    const day = new Date().toISOString().slice(0, 10);
    const report = await s.call('GET', `/v1/orgs/${org.id}/reports?from=${day}&to=${day}&groupBy=campaign&format=csv`, { auth: org.token });
    assert.equal(report.status, 200, report.text);
    assert.match(report.headers.get('content-type') ?? '', /^text\/csv/);
  });
});

describe('the reply check', () => {
  it('answers 500 naming the route and each difference when a reply is not what its route documents', async () => {
    const { org, runId } = await paidOrg('drift@example.com');
    // A run as no code of ours writes it: a status the document does not list and a field it does not name.
    const { firestore } = await import('../functions/adapters/firestore');
    await firestore().doc(`orgs/${org.id}/payoutRuns/${runId}`).update({ status: 'exploded', note: 'not documented' });
    const logged = mock.method(console, 'error', () => undefined);
    let r: Awaited<ReturnType<TestStack['call']>>;
    try {
      r = await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token });
    } finally {
      logged.mock.restore();
    }
    assert.equal(r.status, 500);
    assert.match(r.body.error.message, /GET \/v1\/orgs\/:orgId\/payout-runs answered what its documented response does not describe/);
    assert.deepEqual(r.body.error.details.map((d: { field: string }) => d.field).sort(), ['items.0.status']);
    const log = logged.mock.calls.map((c) => String(c.arguments[0])).find((l) => l.includes('reply does not match its documented response'));
    assert.ok(log, 'the mismatch is logged');
    assert.equal(JSON.parse(log).route, 'GET /v1/orgs/:orgId/payout-runs');

    // With a documented status, the field the document does not name is what is left to report (the run itself
    // answers with what is stored; the list names its fields).
    await firestore().doc(`orgs/${org.id}/payoutRuns/${runId}`).update({ status: 'completed' });
    const extra = await s.call('GET', `/v1/orgs/${org.id}/payout-runs/${runId}`, { auth: org.token });
    assert.equal(extra.status, 500);
    assert.deepEqual(extra.body.error.details, [{ field: 'note', message: 'is not in the documented response' }]);
  });

  it('compares status, kind of body and every field, as the client receives it', () => {
    const response = { json: z.object({ items: z.array(z.object({ id: z.string(), at: z.string().nullable() })) }) };
    const route = { status: 200, response };
    assert.deepEqual(replyMismatches(route, { status: 200, body: { items: [{ id: 'a', at: null }] } }), []);
    // A Date goes out as its ISO string, so it is checked as one.
    assert.deepEqual(replyMismatches(route, { status: 200, body: { items: [{ id: 'a', at: new Date(0) }] } }), []);
    assert.deepEqual(replyMismatches(route, { status: 201, body: { items: [] } }), [{ field: '(status)', message: '201, documented 200' }]);
    assert.deepEqual(replyMismatches(route, { status: 200, body: { items: [{ id: 'a', at: null, secret: 'x' }] } }), [{ field: 'items.0.secret', message: 'is not in the documented response' }]);
    assert.deepEqual(replyMismatches(route, { status: 200, body: { items: [{ id: 1, at: null }] } }).map((d) => d.field), ['items.0.id']);
    assert.deepEqual(replyMismatches(route, { status: 200, body: 'a,b\r\n', contentType: 'text/csv' }), [{ field: '(body)', message: 'text/csv, documented a JSON body' }]);
    assert.deepEqual(replyMismatches(route, { status: 200 }), [{ field: '(body)', message: 'none, documented a JSON body' }]);
    assert.deepEqual(replyMismatches({ status: 200, response: { ...response, csv: 'columns' } }, { status: 200, body: 'a,b\r\n', contentType: 'text/csv; charset=utf-8' }), []);
    assert.deepEqual(replyMismatches({ status: 204, response: {} }, { status: 204, body: { id: 'a' } }), [{ field: '(body)', message: 'JSON, documented no body' }]);
  });

  it('is off unless turned on, and refused in production', () => {
    assert.equal(parseConfig({}).ABP_CHECK_RESPONSES, false);
    assert.equal(parseConfig({ ABP_CHECK_RESPONSES: 'true' }).ABP_CHECK_RESPONSES, true);
    const production = { ABP_ENV: 'production', SUPABASE_URL: 'https://ref.supabase.co', PUBLIC_BASE_URL: 'https://abp.example.com', ABP_HASH_KEY: 'h'.repeat(32), ABP_CLICK_SIGNING_KEY: 'c'.repeat(32) };
    assert.equal(parseConfig(production).ABP_CHECK_RESPONSES, false);
    assert.throws(() => parseConfig({ ...production, ABP_CHECK_RESPONSES: 'true' }), /ABP_CHECK_RESPONSES is for tests/);
  });
});
