import { deterministicId } from '../../../shared/ids';
import { assertValidTransfer, connectedAccountKey, type PayoutProvider } from './provider';

/** Stripe's onboarding links live for minutes; the simulated one mimics that so expiry handling gets exercised. */
const linkLifetimeMs = 5 * 60_000;

/**
 * Runs the payout flow with no Stripe key: every id is derived from its inputs, so retries, restarts and separate
 * processes all see the same account and transfer ids without any state, just as idempotency keys give with Stripe.
 * It does not model refusals (balance, rate limits); those are exercised against the Stripe stand-in in tests.
 */
export function createDryRunProvider(opts: { now?: () => number } = {}): PayoutProvider {
  const now = opts.now ?? Date.now;
  return {
    kind: 'dry-run',

    async createConnectedAccount({ orgId, affiliateId }) {
      return { accountId: deterministicId('acct_sim', connectedAccountKey(orgId, affiliateId)) };
    },

    async createOnboardingLink({ accountId, returnUrl }) {
      // There is no hosted onboarding to visit: send the affiliate straight back to our own return page, which is
      // a local URL when running locally, marked so the page can tell a simulated onboarding from a real one.
      const url = new URL(returnUrl);
      url.searchParams.set('abp_simulated_onboarding', accountId);
      return { url: url.toString(), expiresAt: new Date(now() + linkLifetimeMs).toISOString() };
    },

    async getAccount(accountId) {
      // Simulated onboarding always completes, so the rest of the flow (payout eligibility) can be tried offline.
      return { accountId, payoutsEnabled: true, detailsSubmitted: true };
    },

    async transfer(req) {
      assertValidTransfer(req);
      return { ok: true, transferId: deterministicId('tr_sim', req.payoutId), simulated: true };
    },

    async findTransfer() {
      // Nothing is stored to find, and sending again answers the same simulated transfer however late.
      return undefined;
    },
  };
}
