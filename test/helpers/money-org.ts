import assert from 'node:assert/strict';
import type { PayoutProvider } from '../../functions/adapters/payouts';
import type { OrgScope } from '../../functions/services/tenancy';
import { campaignBody, newOrg, startTestStack, type TestStack } from './stack';
import { startStripeStandIn, type StripeStandIn } from './stripe-stand-in';
import { eventually } from './wait';

/** The signing secret of the money tests' Stripe webhooks: the platform account's endpoint. */
export const webhookSecret = 'whsec_local_test_secret';
/** The connected accounts' endpoint's signing secret (account.updated, payout.* on an affiliate's account). */
export const connectWebhookSecret = 'whsec_local_test_connect_secret';

export interface MoneyStack {
  s: TestStack;
  stripe: StripeStandIn;
  /** A provider talking to the stand-in, as production's talks to Stripe. */
  stripeProvider: PayoutProvider;
  /** Replaces the payout provider the stack uses (undefined: the configured one, the dry run here). */
  setProvider(p: PayoutProvider | undefined): void;
  /** An organisation's scope as the jobs use it (no user), for calling services and reading documents directly. */
  system(orgId: string): OrgScope;
  /** The payout run service itself, for tests that need a fixed run id or a state only a crash leaves. */
  runPayouts: typeof import('../../functions/services/payout-runs').runPayouts;
  close(): Promise<void>;
}

/** The stack with webhooks on, a Stripe stand-in and a provider for it: what every money test file starts. */
export async function startMoneyStack(): Promise<MoneyStack> {
  const stripe = await startStripeStandIn();
  const s = await startTestStack({ STRIPE_WEBHOOK_SECRET: webhookSecret, STRIPE_CONNECT_WEBHOOK_SECRET: connectWebhookSecret });
  const payouts = await import('../../functions/adapters/payouts');
  const { createStripeProvider } = await import('../../functions/adapters/payouts/stripe-provider');
  const stripeProvider = createStripeProvider({ secretKey: 'sk_test_abp_local', host: stripe.host, port: stripe.port, protocol: 'http', maxNetworkRetries: 1 });
  const setProvider = payouts.setPayoutProviderForTests;
  const { OrgScope } = await import('../../functions/services/tenancy');
  const { runPayouts } = await import('../../functions/services/payout-runs');
  return {
    s, stripe, stripeProvider, setProvider, runPayouts,
    system: (orgId) => OrgScope.system(orgId, 'test'),
    close: async () => {
      setProvider(undefined);
      await s.close();
      await stripe.close();
    },
  };
}

/**
 * A provider whose first transfer waits at a gate: `reached` resolves when it gets there, `release` lets it go
 * on, `calls` counts every transfer asked for. Only the first waits, so a second one let through (the defect
 * a lease test looks for) pays and is seen instead of hanging the test.
 */
export function gatedFirstTransfer(provider: PayoutProvider): { provider: PayoutProvider; reached: Promise<void>; release(): void; calls(): number } {
  let arrive!: () => void;
  const reached = new Promise<void>((resolve) => (arrive = resolve));
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let calls = 0;
  return {
    reached, release, calls: () => calls,
    provider: { ...provider, transfer: async (req) => {
      if (++calls === 1) {
        arrive();
        await gate;
      }
      return provider.transfer(req);
    } },
  };
}

/** An organisation with one campaign, one affiliate and its link, as the money tests start from. */
export interface MoneyOrg { id: string; token: string; campaign: string; link: string; affiliate: string; postbackToken: string }

/**
 * What the money tests do to an organisation, through the API and the postback function of the stack that
 * `stack()` returns (the test file starts it in its before hook).
 */
export function moneyOrgs(stack: () => TestStack) {
  async function setupOrg(email: string, opts: { payout?: unknown; minimumPayout?: number; holdDays?: number } = {}): Promise<MoneyOrg> {
    const s = stack();
    const o = await newOrg(s, email, 'professional');
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${o.orgId}${path}`, { auth: o.token, body });
    const campaign = (await post('/campaigns', campaignBody({ payout: opts.payout ?? { type: 'cpa', amount: 500 }, holdDays: opts.holdDays ?? 0 }))).body.id;
    const affiliate = (await post('/affiliates', { name: 'Pat', email: `pat+${email}`, minimumPayout: opts.minimumPayout ?? 100 })).body.id;
    const link = (await post('/links', { campaignId: campaign, affiliateId: affiliate })).body.id;
    const postbackToken = (await s.call('GET', `/v1/orgs/${o.orgId}/postback-config`, { auth: o.token })).body.token;
    return { id: o.orgId, token: o.token, campaign, link, affiliate, postbackToken };
  }

  async function addAffiliate(org: MoneyOrg, name: string, campaign = org.campaign): Promise<{ affiliate: string; link: string }> {
    const s = stack();
    const affiliate = (await s.call('POST', `/v1/orgs/${org.id}/affiliates`, { auth: org.token, body: { name, email: `${name}@pub.example`, minimumPayout: 100 } })).body.id;
    const link = (await s.call('POST', `/v1/orgs/${org.id}/links`, { auth: org.token, body: { campaignId: campaign, affiliateId: affiliate } })).body.id;
    return { affiliate, link };
  }

  /** A conversion through the postback function, waited for until the state worker has booked it. */
  async function convert(org: MoneyOrg, txnId: string, amount = '20.00', link = org.link): Promise<string> {
    const s = stack();
    const { mintClickId } = await import('../../shared/domain/click-id');
    const { secrets } = await import('../../functions/adapters/local-secrets');
    const clickId = mintClickId(secrets().clickSigningKey, link, Date.now() - 60_000);
    const r = await s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: clickId, txn_id: txnId, amount })}`);
    assert.equal(r.status, 200, r.text);
    await eventually(async () => ((await s.call('GET', `/v1/orgs/${org.id}/conversions/${r.body.conversionId}`, { auth: org.token })).status === 200 ? true : undefined), `conversion ${txnId}`);
    return r.body.conversionId;
  }

  const patch = (org: MoneyOrg, id: string, body: unknown) => stack().call('PATCH', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token, body });
  const balance = async (org: MoneyOrg, affiliate = org.affiliate, currency = 'USD') =>
    (await stack().call('GET', `/v1/orgs/${org.id}/affiliates/${affiliate}/balance`, { auth: org.token })).body.balances.find((b: { currency: string }) => b.currency === currency);

  /** A conversion booked and approved at once (its commission ready for a payout run). */
  async function approved(org: MoneyOrg, txnId: string, link = org.link): Promise<string> {
    const id = await convert(org, txnId, undefined, link);
    assert.equal((await patch(org, id, { status: 'approved' })).status, 200);
    return id;
  }

  /** The affiliate's Stripe account, created and completed at the stand-in with payouts enabled; its id. */
  async function onboard(org: MoneyOrg, stripe: StripeStandIn, affiliate = org.affiliate): Promise<string> {
    const onboarding = () => stack().call('POST', `/v1/orgs/${org.id}/affiliates/${affiliate}/stripe/onboarding`, { auth: org.token });
    const account = (await onboarding()).body.affiliate.stripeAccountId as string;
    stripe.completeOnboarding(account, { payoutsEnabled: true });
    await onboarding();
    return account;
  }

  return { setupOrg, addAffiliate, convert, patch, balance, approved, onboard };
}
