import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { campaignBody, newOrg, startTestStack, type TestStack } from './helpers/stack';
import { eventually } from './helpers/wait';

/**
 * The click function's link cache, on the real Firestore emulator, with a TTL of one second: a click never waits for
 * Firestore on a link the instance has seen, and a change to its campaign still shows within the TTL and a lookup.
 * It holds 20 links here (LINK_CACHE_MAX_ENTRIES).
 */
let s: TestStack;
let resolveLinkNow: typeof import('../functions/services/link-resolver').resolveLinkNow;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  s = await startTestStack({ LINK_CACHE_TTL_SECONDS: '1', LINK_CACHE_MAX_ENTRIES: '20' });
  ({ resolveLinkNow } = await import('../functions/services/link-resolver'));
});
after(() => s.close());

describe('the link cache', () => {
  it('answers a link past its TTL from memory while one lookup refreshes it, and shows the change once refreshed', async () => {
    const { orgId, token } = await newOrg(s, 'link-cache@example.com');
    const post = async (path: string, body: unknown) => (await s.call('POST', `/v1/orgs/${orgId}${path}`, { auth: token, body })).body.id as string;
    const campaign = await post('/campaigns', campaignBody());
    const affiliate = await post('/affiliates', { name: 'Pat', email: 'pat@cache.example' });
    const link = await post('/links', { campaignId: campaign, affiliateId: affiliate });

    const first = resolveLinkNow(link);
    assert.ok(first instanceof Promise, 'a link never seen is looked up');
    assert.equal((await first)?.campaign.status, 'active');
    assert.ok(!(resolveLinkNow(link) instanceof Promise), 'then answered from memory');

    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/campaigns/${campaign}`, { auth: token, body: { status: 'paused' } })).status, 200);
    await sleep(1100);
    const stale = resolveLinkNow(link);
    assert.ok(!(stale instanceof Promise), 'past its TTL, a known link is still answered without waiting');
    assert.equal(stale?.campaign.status, 'active', 'as it was, while the refresh runs');
    await eventually(async () => {
      const now = resolveLinkNow(link);
      return !(now instanceof Promise) && now?.campaign.status === 'paused' ? true : undefined;
    }, 'the refreshed link');

    // Unused for more than two TTLs: too old to answer from memory, so the next click waits for a lookup.
    await sleep(2100);
    const old = resolveLinkNow(link);
    assert.ok(old instanceof Promise, 'an entry past twice its TTL is looked up again');
    assert.equal((await old)?.campaign.status, 'paused');
  });

  it('keeps the links people click when a flood of made-up link ids is looked up, and answers those from memory too', async () => {
    const { orgId, token } = await newOrg(s, 'link-flood@example.com');
    const post = async (path: string, body: unknown) => (await s.call('POST', `/v1/orgs/${orgId}${path}`, { auth: token, body })).body.id as string;
    const link = await post('/links', { campaignId: await post('/campaigns', campaignBody()), affiliateId: await post('/affiliates', { name: 'Pat', email: 'pat@flood.example' }) });
    assert.ok((await resolveLinkNow(link)) !== undefined);
    // More made-up ids than the cache holds links, each looked up once.
    const madeUp = Array.from({ length: 30 }, (_, i) => `zzzzzzzzzz${String(i).padStart(2, '0')}`);
    assert.deepEqual(await Promise.all(madeUp.map((id) => resolveLinkNow(id))), madeUp.map(() => undefined));
    const hot = resolveLinkNow(link);
    assert.ok(!(hot instanceof Promise), 'the link is still answered from memory');
    assert.equal(hot?.linkId, link);
    const again = 'zzzzzzzzzzzz';
    assert.ok(resolveLinkNow(again) instanceof Promise);
    assert.equal(await resolveLinkNow(again), undefined);
    assert.equal(resolveLinkNow(again), undefined, 'a made-up id asked again within the TTL is answered from memory, without a lookup');
  });
});
