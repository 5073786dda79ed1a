import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Stripe from 'stripe';
import { createDryRunProvider } from '../functions/adapters/payouts/dry-run-provider';
import { createPayoutProvider, PayoutProviderError, type PayoutProvider, type TransferRequest } from '../functions/adapters/payouts/index';
import { createStripeProvider } from '../functions/adapters/payouts/stripe-provider';
import { parseStripeWebhook } from '../functions/adapters/payouts/stripe-webhook';
import { accountObject, eventObject, startStripeStandIn, type StripeStandIn } from './helpers/stripe-stand-in';

/**
 * The Stripe provider is exercised through the real stripe-node client against a local stand-in that answers as
 * Stripe's API does (see test/helpers/stripe-stand-in.ts); nothing here needs the network or the emulators.
 */

const secretKey = 'sk_test_standin0000000000';
let seq = 0;
const unique = (prefix: string) => `${prefix}_${process.pid}_${++seq}`;

function transferRequest(destinationAccountId: string, overrides: Partial<TransferRequest> = {}): TransferRequest {
  const payoutId = overrides.payoutId ?? unique('pay');
  return {
    payoutId,
    amount: 12_345,
    currency: 'EUR',
    destinationAccountId,
    transferGroup: 'run_1',
    metadata: { orgId: 'org_1', affiliateId: 'aff_1', payoutId, runId: 'run_1' },
    description: 'Affiliate commissions',
    ...overrides,
  };
}

describe('Stripe payout provider against the Stripe stand-in', () => {
  let standIn: StripeStandIn;
  let provider: PayoutProvider;

  const transferPosts = () => standIn.requests.filter((r) => r.method === 'POST' && r.path === '/v1/transfers');
  async function onboardedAccount(): Promise<string> {
    const { accountId } = await provider.createConnectedAccount({ orgId: 'org_1', affiliateId: unique('aff'), email: 'aff@example.com' });
    standIn.completeOnboarding(accountId);
    return accountId;
  }

  before(async () => {
    standIn = await startStripeStandIn({ secretKey });
    provider = createStripeProvider({ secretKey, host: standIn.host, port: standIn.port, protocol: 'http', maxNetworkRetries: 2 });
  });
  after(() => standIn.close());

  it("sends amounts in Stripe's unit for the currency, which is not always the ledger's minor unit", async () => {
    const destination = await onboardedAccount();
    // ISK has no minor unit in ISO 4217 but two decimals at Stripe; HUF two in both; JPY none in either; KWD three in both.
    for (const [currency, amount, sent] of [['ISK', 5_000, '500000'], ['HUF', 1_200_000, '1200000'], ['JPY', 1_500, '1500'], ['KWD', 1_250, '1250']] as const) {
      const out = await provider.transfer(transferRequest(destination, { currency, amount }));
      assert.equal(out.ok, true, currency);
      assert.equal(transferPosts().at(-1)!.body.amount, sent, currency);
    }
    // LYD has three decimals in ISO 4217 and two at Stripe: 12.345 cannot be sent. A definite failure, nothing sent.
    const before = transferPosts().length;
    const odd = await provider.transfer(transferRequest(destination, { currency: 'LYD', amount: 12_345 }));
    assert.deepEqual(odd.ok ? odd : [odd.ok, odd.reason, odd.retryable], [false, 'stripe_error', false]);
    assert.equal(transferPosts().length, before);
  });

  it('sends the transfer as Stripe expects, keyed by the payout id', async () => {
    const destination = await onboardedAccount();
    const req = transferRequest(destination);
    const out = await provider.transfer(req);

    assert.equal(out.ok, true);
    assert.ok(out.ok && out.simulated === false);
    const sent = transferPosts().at(-1)!;
    assert.equal(sent.headers['idempotency-key'], req.payoutId);
    assert.equal(sent.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.deepEqual(sent.body, {
      amount: '12345',
      currency: 'eur',
      destination,
      transfer_group: 'run_1',
      metadata: { orgId: 'org_1', affiliateId: 'aff_1', payoutId: req.payoutId, runId: 'run_1' },
      description: 'Affiliate commissions',
    });
    const stored = standIn.transfers.get(out.ok ? out.transferId : '');
    assert.ok(stored, 'the stand-in holds the transfer the provider reported');
    assert.equal(stored.amount, 12_345);
    assert.equal(stored.currency, 'eur');
  });

  it('replaying a payout id returns the same transfer and moves money once', async () => {
    const destination = await onboardedAccount();
    const req = transferRequest(destination);
    const before = standIn.transfers.size;
    const first = await provider.transfer(req);
    const second = await provider.transfer(req);

    assert.ok(first.ok && second.ok);
    assert.equal(second.transferId, first.transferId);
    assert.equal(standIn.transfers.size, before + 1);
    assert.equal(transferPosts().at(-1)!.replayed, true);
  });

  it('refuses to reuse a payout id with a different amount', async () => {
    const destination = await onboardedAccount();
    const req = transferRequest(destination);
    assert.ok((await provider.transfer(req)).ok);
    const before = standIn.transfers.size;

    const out = await provider.transfer({ ...req, amount: req.amount + 1 });
    assert.ok(!out.ok);
    assert.equal(out.reason, 'idempotency_conflict');
    assert.equal(out.retryable, false);
    assert.match(out.message, /same parameters/);
    assert.equal(standIn.transfers.size, before);
  });

  it('reports a 409 (another request in progress under the same key) as retryable: that request may yet make the transfer', async () => {
    const destination = await onboardedAccount();
    const inProgress = { status: 409, body: { error: { type: 'idempotency_error', message: 'There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.' } } };
    standIn.failNext('/v1/transfers', inProgress, 3); // the request and stripe-node's two resends of a 409
    const before = transferPosts().length;
    const out = await provider.transfer(transferRequest(destination));
    assert.ok(!out.ok);
    assert.deepEqual([out.reason, out.retryable], ['indeterminate', true]);
    assert.equal(transferPosts().length - before, 3, 'stripe-node sends a 409 again itself before giving up');
  });

  it('reports balance_insufficient as a non-retryable outcome instead of throwing', async () => {
    const destination = await onboardedAccount();
    standIn.failNext('/v1/transfers', {
      status: 400,
      body: { error: { type: 'invalid_request_error', code: 'balance_insufficient', message: 'You have insufficient available funds in your Stripe account.' } },
    });
    const before = standIn.transfers.size;
    const out = await provider.transfer(transferRequest(destination));

    assert.equal(out.ok, false);
    assert.ok(!out.ok);
    assert.equal(out.reason, 'balance_insufficient');
    assert.equal(out.retryable, false);
    assert.match(out.message, /insufficient available funds/);
    assert.equal(standIn.transfers.size, before);
  });

  it('keeps replaying balance_insufficient for the same payout id after a top-up, as Stripe stores it', async () => {
    const destination = await onboardedAccount();
    standIn.setAvailableBalance('usd', 100);
    const req = transferRequest(destination, { currency: 'USD', amount: 500 });
    const first = await provider.transfer(req);
    assert.ok(!first.ok && first.reason === 'balance_insufficient');

    standIn.setAvailableBalance('usd', 10_000);
    const again = await provider.transfer(req);
    assert.ok(!again.ok && again.reason === 'balance_insufficient');
    assert.equal(transferPosts().at(-1)!.replayed, true);

    const fresh = await provider.transfer({ ...req, payoutId: unique('pay') });
    assert.equal(fresh.ok, true);
  });

  it('lets stripe-node retry a 429 that Stripe marks Stripe-Should-Retry: true, under the same key', async () => {
    const destination = await onboardedAccount();
    standIn.failNext('/v1/transfers', {
      status: 429,
      headers: { 'stripe-should-retry': 'true' },
      body: { error: { type: 'invalid_request_error', code: 'lock_timeout', message: 'This object cannot be accessed right now because another API request or Stripe process is currently accessing it.' } },
    });
    const req = transferRequest(destination);
    const sentBefore = transferPosts().length;
    const before = standIn.transfers.size;
    const out = await provider.transfer(req);

    assert.equal(out.ok, true);
    const attempts = transferPosts().slice(sentBefore);
    assert.deepEqual(attempts.map((r) => r.status), [429, 200]);
    assert.deepEqual(attempts.map((r) => r.headers['idempotency-key']), [req.payoutId, req.payoutId]);
    assert.equal(standIn.transfers.size, before + 1);
  });

  it('reports a plain 429 rate_limit as retryable (stripe-node does not retry it) and pays once on the next call', async () => {
    const destination = await onboardedAccount();
    standIn.failNext('/v1/transfers', {
      status: 429,
      body: { error: { type: 'invalid_request_error', code: 'rate_limit', message: 'Too many requests hit the API too quickly.' } },
    });
    const req = transferRequest(destination);
    const sentBefore = transferPosts().length;
    const before = standIn.transfers.size;

    const limited = await provider.transfer(req);
    assert.ok(!limited.ok);
    assert.equal(limited.reason, 'rate_limited');
    assert.equal(limited.retryable, true);
    assert.equal(transferPosts().length - sentBefore, 1, 'stripe-node sent it once');

    const retried = await provider.transfer(req);
    assert.equal(retried.ok, true);
    assert.equal(standIn.transfers.size, before + 1);
  });

  it('reports an unknown destination as account_invalid', async () => {
    const out = await provider.transfer(transferRequest('acct_doesnotexist'));
    assert.ok(!out.ok);
    assert.equal(out.reason, 'account_invalid');
    assert.equal(out.retryable, false);
  });

  it('reports a rejected API key as auth_failed', async () => {
    const wrongKey = createStripeProvider({ secretKey: 'sk_test_wrong', host: standIn.host, port: standIn.port, protocol: 'http', maxNetworkRetries: 0 });
    const out = await wrongKey.transfer(transferRequest('acct_x'));
    assert.ok(!out.ok);
    assert.equal(out.reason, 'auth_failed');
    assert.equal(standIn.requests.at(-1)!.status, 401);
  });

  it('creates one Express account per affiliate even when onboarding is retried', async () => {
    const affiliateId = unique('aff');
    const input = { orgId: 'org_1', affiliateId, email: 'ana@example.com', country: 'us' };
    const first = await provider.createConnectedAccount(input);
    const second = await provider.createConnectedAccount(input);

    assert.equal(second.accountId, first.accountId);
    assert.match(first.accountId, /^acct_/);
    const posts = standIn.requests.filter((r) => r.method === 'POST' && r.path === '/v1/accounts' && r.body.email === 'ana@example.com');
    assert.equal(posts.length, 2);
    assert.equal(posts[0]!.headers['idempotency-key'], posts[1]!.headers['idempotency-key']);
    assert.deepEqual(posts[0]!.body, {
      type: 'express',
      email: 'ana@example.com',
      country: 'US',
      capabilities: { transfers: { requested: 'true' } },
      metadata: { orgId: 'org_1', affiliateId },
    });
    assert.equal([...standIn.accounts.values()].filter((a) => (a.metadata as Record<string, string>).affiliateId === affiliateId).length, 1);
  });

  it('creates an onboarding link for the account', async () => {
    const { accountId } = await provider.createConnectedAccount({ orgId: 'org_1', affiliateId: unique('aff'), email: 'bo@example.com' });
    const link = await provider.createOnboardingLink({ accountId, refreshUrl: 'http://127.0.0.1:8080/onboarding/refresh', returnUrl: 'http://127.0.0.1:8080/onboarding/done' });

    assert.match(link.url, /^https:\/\/connect\.stripe\.com\//);
    assert.ok(Date.parse(link.expiresAt) > Date.now());
    assert.deepEqual(standIn.requests.at(-1)!.body, {
      account: accountId,
      refresh_url: 'http://127.0.0.1:8080/onboarding/refresh',
      return_url: 'http://127.0.0.1:8080/onboarding/done',
      type: 'account_onboarding',
    });
  });

  it('maps payouts_enabled and details_submitted through onboarding and review', async () => {
    const { accountId } = await provider.createConnectedAccount({ orgId: 'org_1', affiliateId: unique('aff'), email: 'cy@example.com' });
    assert.deepEqual(await provider.getAccount(accountId), { accountId, payoutsEnabled: false, detailsSubmitted: false });
    standIn.completeOnboarding(accountId, { payoutsEnabled: false });
    assert.deepEqual(await provider.getAccount(accountId), { accountId, payoutsEnabled: false, detailsSubmitted: true });
    standIn.completeOnboarding(accountId);
    assert.deepEqual(await provider.getAccount(accountId), { accountId, payoutsEnabled: true, detailsSubmitted: true });
  });

  it('throws a PayoutProviderError for an unknown account', async () => {
    await assert.rejects(provider.getAccount('acct_missing'), (err: unknown) => err instanceof PayoutProviderError && err.reason === 'account_invalid');
  });
});

describe('dry-run payout provider', () => {
  const dry = createDryRunProvider({ now: () => Date.parse('2030-01-01T00:00:00Z') });

  it('returns the same simulated transfer for the same payout id, and different ones otherwise', async () => {
    const a = await dry.transfer(transferRequest('acct_sim_x', { payoutId: 'pay_a' }));
    const again = await createDryRunProvider().transfer(transferRequest('acct_sim_x', { payoutId: 'pay_a' }));
    const b = await dry.transfer(transferRequest('acct_sim_x', { payoutId: 'pay_b' }));

    assert.ok(a.ok && again.ok && b.ok);
    assert.equal(a.simulated, true);
    assert.match(a.transferId, /^tr_sim_[0-9a-z]+$/);
    assert.equal(again.transferId, a.transferId);
    assert.notEqual(b.transferId, a.transferId);
  });

  it('derives the account id from the organisation and affiliate', async () => {
    const a = await dry.createConnectedAccount({ orgId: 'org_1', affiliateId: 'aff_1', email: 'a@example.com' });
    const same = await dry.createConnectedAccount({ orgId: 'org_1', affiliateId: 'aff_1', email: 'changed@example.com' });
    const other = await dry.createConnectedAccount({ orgId: 'org_2', affiliateId: 'aff_1', email: 'a@example.com' });
    assert.match(a.accountId, /^acct_sim_/);
    assert.equal(same.accountId, a.accountId);
    assert.notEqual(other.accountId, a.accountId);
    assert.deepEqual(await dry.getAccount(a.accountId), { accountId: a.accountId, payoutsEnabled: true, detailsSubmitted: true });
  });

  it('sends onboarding straight back to the return URL', async () => {
    const link = await dry.createOnboardingLink({ accountId: 'acct_sim_1', refreshUrl: 'http://127.0.0.1:8080/r', returnUrl: 'http://127.0.0.1:8080/done?x=1' });
    assert.equal(link.url, 'http://127.0.0.1:8080/done?x=1&abp_simulated_onboarding=acct_sim_1');
    assert.equal(link.expiresAt, '2030-01-01T00:05:00.000Z');
  });

  it('rejects amounts Stripe would reject', async () => {
    await assert.rejects(dry.transfer(transferRequest('acct_sim_x', { amount: 12.5 })), RangeError);
    await assert.rejects(dry.transfer(transferRequest('acct_sim_x', { amount: 0 })), RangeError);
  });
});

describe('payout provider selection', () => {
  it('uses dry-run without a Stripe key, and Stripe with one', () => {
    assert.equal(createPayoutProvider({ env: 'local' }).kind, 'dry-run');
    assert.equal(createPayoutProvider({ env: 'local', stripeSecretKey: 'sk_test_x' }).kind, 'stripe');
  });

  it('refuses to simulate payouts in production, and live keys locally', () => {
    assert.throws(() => createPayoutProvider({ env: 'production' }), /STRIPE_SECRET_KEY/);
    assert.throws(() => createPayoutProvider({ env: 'local', stripeSecretKey: 'sk_live_x' }), /live/);
  });
});

describe('Stripe webhook parsing', () => {
  const secret = 'whsec_standin_secret';
  const account = accountObject('acct_1Webhook', { email: 'aff@example.com' });
  const payload = JSON.stringify(eventObject('account.updated', account, 'acct_1Webhook'));
  const sign = (body: string, opts: { secret?: string; timestamp?: number } = {}) =>
    Stripe.webhooks.generateTestHeaderString({ payload: body, secret: opts.secret ?? secret, timestamp: opts.timestamp });

  it('accepts a correctly signed event, from a string or the raw Buffer', () => {
    const header = sign(payload);
    for (const body of [payload, Buffer.from(payload)]) {
      const parsed = parseStripeWebhook(body, header, secret);
      assert.ok(parsed.ok, parsed.ok ? '' : parsed.message);
      assert.equal(parsed.event.type, 'account.updated');
      assert.equal(parsed.event.account, 'acct_1Webhook');
      assert.match(parsed.event.id, /^evt_/);
      assert.equal(parsed.event.data.object.id, 'acct_1Webhook');
    }
  });

  it('rejects a signature made with another secret, or over another body', () => {
    assert.equal(parseStripeWebhook(payload, sign(payload, { secret: 'whsec_other' }), secret).ok, false);
    const tampered = payload.replace('aff@example.com', 'evil@example.com');
    assert.notEqual(tampered, payload);
    assert.equal(parseStripeWebhook(tampered, sign(payload), secret).ok, false);
  });

  it('rejects a stale timestamp and a missing header', () => {
    const stale = parseStripeWebhook(payload, sign(payload, { timestamp: Math.floor(Date.now() / 1000) - 600 }), secret);
    assert.ok(!stale.ok);
    assert.match(stale.message, /tolerance/i);
    assert.equal(parseStripeWebhook(payload, undefined, secret).ok, false);
  });
});
