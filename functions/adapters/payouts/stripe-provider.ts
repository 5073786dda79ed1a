import Stripe from 'stripe';
import {
  assertValidTransfer,
  connectedAccountKey,
  PayoutProviderError,
  type PayoutProvider,
  type TransferFailureReason,
  type TransferOutcome,
} from './provider';
import { toStripeAmount } from './stripe-units';

export interface StripeProviderOptions {
  secretKey: string;
  /** host/port/protocol exist so tests (and a local stand-in) can replace api.stripe.com; production omits them. */
  host?: string;
  port?: number;
  protocol?: 'http' | 'https';
  /**
   * stripe-node retries connection errors, 409, 5xx and responses marked `Stripe-Should-Retry: true`, reusing the
   * request's idempotency key; it does not retry a plain 429 (see RequestSender._shouldRetry). Default 2.
   */
  maxNetworkRetries?: number;
}

/** Codes Stripe uses when the destination cannot take a transfer; grouped because the run's remedy is the same. */
const accountCodes = new Set(['account_invalid', 'account_closed', 'no_account', 'transfers_not_allowed', 'capability_not_active']);

/**
 * Maps a stripe-node error to our stable vocabulary. Anything that is not a Stripe error is a bug on our side
 * and is rethrown rather than reported as a payout failure.
 */
export function classifyStripeError(err: unknown): { reason: TransferFailureReason; message: string; retryable: boolean; param?: string } {
  if (!(err instanceof Stripe.errors.StripeError)) throw err;
  const message = err.message || err.type;
  const param = err.param || undefined;
  const fail = (reason: TransferFailureReason, retryable: boolean) => ({ reason, message, retryable, ...(param ? { param } : {}) });
  // stripe-node raises StripeRateLimitError for any 429 (including lock_timeout) and for 400 code rate_limit.
  if (err instanceof Stripe.errors.StripeRateLimitError || err.code === 'rate_limit') return fail('rate_limited', true);
  if (err instanceof Stripe.errors.StripeIdempotencyError) return fail('idempotency_conflict', false);
  if (err.code === 'balance_insufficient') return fail('balance_insufficient', false);
  if ((err.code && accountCodes.has(err.code)) || (err.code === 'resource_missing' && (err.param === 'destination' || err.param === 'account'))) {
    return fail('account_invalid', false);
  }
  if (err instanceof Stripe.errors.StripeAuthenticationError || err instanceof Stripe.errors.StripePermissionError) return fail('auth_failed', false);
  // The request may have been executed: only a retry under the same idempotency key is safe. A 409 is a request
  // that met another in progress under the same key (stripe-node's own resend after a dropped connection, while the
  // first attempt still runs): that attempt may yet make the transfer. stripe-node raises StripeIdempotencyError
  // only for a 400 or 404, so a 409 is never taken for the refusal above.
  if (err instanceof Stripe.errors.StripeConnectionError || (err.statusCode ?? 0) >= 500 || err.statusCode === 409) return fail('indeterminate', true);
  return fail('stripe_error', false);
}

function rethrowAsProviderError(err: unknown): never {
  const { reason, message, retryable, param } = classifyStripeError(err);
  throw new PayoutProviderError(reason, message, retryable, param);
}

export function createStripeProvider(opts: StripeProviderOptions): PayoutProvider {
  const stripe = new Stripe(opts.secretKey, {
    host: opts.host,
    port: opts.port,
    protocol: opts.protocol,
    maxNetworkRetries: opts.maxNetworkRetries ?? 2,
  });

  return {
    kind: 'stripe',

    async createConnectedAccount({ orgId, affiliateId, email, country }) {
      try {
        const account = await stripe.accounts.create(
          {
            type: 'express',
            email,
            country: country?.toUpperCase(),
            // Affiliates only receive money from the platform; they never take card payments themselves.
            capabilities: { transfers: { requested: true } },
            metadata: { orgId, affiliateId },
          },
          { idempotencyKey: connectedAccountKey(orgId, affiliateId) },
        );
        return { accountId: account.id };
      } catch (err) {
        return rethrowAsProviderError(err);
      }
    },

    async createOnboardingLink({ accountId, refreshUrl, returnUrl }) {
      try {
        const link = await stripe.accountLinks.create({ account: accountId, refresh_url: refreshUrl, return_url: returnUrl, type: 'account_onboarding' });
        return { url: link.url, expiresAt: new Date(link.expires_at * 1000).toISOString() };
      } catch (err) {
        return rethrowAsProviderError(err);
      }
    },

    async getAccount(accountId) {
      try {
        const account = await stripe.accounts.retrieve(accountId);
        return { accountId: account.id, payoutsEnabled: account.payouts_enabled === true, detailsSubmitted: account.details_submitted === true };
      } catch (err) {
        return rethrowAsProviderError(err);
      }
    },

    async transfer(req): Promise<TransferOutcome> {
      assertValidTransfer(req);
      let amount: number;
      try {
        amount = toStripeAmount(req.amount, req.currency);
      } catch (err) {
        // Not an amount Stripe can take in this currency: a definite failure, the money stays in the balance.
        return { ok: false, reason: 'stripe_error', message: String((err as Error).message ?? err), retryable: false };
      }
      try {
        const transfer = await stripe.transfers.create(
          {
            amount,
            currency: req.currency.toLowerCase(),
            destination: req.destinationAccountId,
            transfer_group: req.transferGroup,
            metadata: req.metadata,
            description: req.description,
          },
          { idempotencyKey: req.payoutId },
        );
        return { ok: true, transferId: transfer.id, simulated: false };
      } catch (err) {
        return { ok: false, ...classifyStripeError(err) };
      }
    },

    async findTransfer({ payoutId, transferGroup, destinations }) {
      try {
        // A run's transfers share its group, and one affiliate's in it are one or two: a run of many payouts whose
        // Stripe was out for a day would otherwise list the whole group once per payout. Metadata names the payout.
        const searches = destinations?.length ? destinations.map((destination) => ({ destination })) : [{}];
        for (const narrowed of searches) {
          for await (const transfer of stripe.transfers.list({ transfer_group: transferGroup, limit: 100, ...narrowed })) {
            if (transfer.metadata?.payoutId === payoutId) return { transferId: transfer.id };
          }
        }
        return undefined;
      } catch (err) {
        return rethrowAsProviderError(err);
      }
    },
  };
}
