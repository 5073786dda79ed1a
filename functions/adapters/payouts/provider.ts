import { deterministicId } from '../../../shared/ids';

/**
 * The port payout runs call to move money to affiliates. Stripe Connect is the real implementation; the dry-run
 * one lets the whole flow run offline. Amounts are integer minor units everywhere, as in shared/money.
 */

export interface TransferRequest {
  /** Doubles as the idempotency key, so a payout retried after a crash or timeout can never pay twice. */
  payoutId: string;
  /** Integer minor units (> 0), the only unit Stripe accepts, so no rounding happens at the boundary. */
  amount: number;
  /** ISO 4217 as our code stores it (upper case); providers translate to what their API expects. */
  currency: string;
  /** The affiliate's connected account, recorded at onboarding. */
  destinationAccountId: string;
  /** The payout run id, so Stripe groups one run's transfers for reconciliation. */
  transferGroup: string;
  /** orgId, affiliateId, payoutId, runId: lets a transfer seen only in Stripe (dashboard, webhook) be traced back. */
  metadata: Record<string, string>;
  /** Shown to the affiliate in their Express dashboard. */
  description?: string;
}

/**
 * Stable failure codes the payout run branches on (never Stripe's raw strings, which may grow):
 * - balance_insufficient: the platform balance cannot cover it; top up, then retry under a new key (see below).
 * - rate_limited: Stripe shed the request before executing it; the same payoutId can be sent again later.
 * - idempotency_conflict: this payoutId was already used with different parameters; a bug to investigate.
 * - account_invalid: the destination cannot receive transfers (unknown, closed, or not onboarded).
 * - auth_failed: the secret key is wrong or lacks permission; every further call will fail the same way.
 * - indeterminate: a network error or Stripe 5xx; the transfer may or may not exist, so only the same payoutId
 *   may be retried (Stripe replays the stored outcome or finishes the original).
 * - stripe_error: any other refusal by Stripe.
 */
export type TransferFailureReason =
  | 'balance_insufficient'
  | 'rate_limited'
  | 'idempotency_conflict'
  | 'account_invalid'
  | 'auth_failed'
  | 'indeterminate'
  | 'stripe_error';

export type TransferOutcome =
  /** simulated marks dry-run transfers so no one mistakes them for money that moved. */
  | { ok: true; transferId: string; simulated: boolean }
  /**
   * retryable: calling transfer() again with the same payoutId may succeed. Stripe stores the outcome of a request
   * that began executing under its idempotency key for 24 hours, so e.g. balance_insufficient is replayed, not retried.
   */
  | { ok: false; reason: TransferFailureReason; message: string; retryable: boolean };

export interface ConnectedAccount {
  accountId: string;
  /** Transfers to an account whose payouts are disabled sit in its balance; runs skip such affiliates. */
  payoutsEnabled: boolean;
  /** Tells an unfinished onboarding (send a new link) from one Stripe is still reviewing. */
  detailsSubmitted: boolean;
}

export interface PayoutProvider {
  /** Lets callers record which provider paid, and refuse dry-run where real money is expected. */
  readonly kind: 'stripe' | 'dry-run';
  /**
   * Creates an Express account. The idempotency key comes from orgId+affiliateId, so a retried onboarding within
   * Stripe's 24-hour key window returns the same account; persist accountId, since after that window it would not.
   */
  createConnectedAccount(input: { orgId: string; affiliateId: string; email: string; country?: string }): Promise<{ accountId: string }>;
  /** Links are single-use and expire within minutes, so one is minted each time the affiliate opens onboarding. */
  createOnboardingLink(input: { accountId: string; refreshUrl: string; returnUrl: string }): Promise<{ url: string; expiresAt: string }>;
  /** Read before paying, and after the return URL is hit, because onboarding completes on Stripe's side. */
  getAccount(accountId: string): Promise<ConnectedAccount>;
  /** Never throws for a provider refusal: the run records each payout's outcome and carries on with the next. */
  transfer(req: TransferRequest): Promise<TransferOutcome>;
  /**
   * The transfer an earlier attempt made for this payout, if any. Stripe keeps an idempotency key for at least
   * 24 hours only: a payout retried later must look before it sends, or the same key would pay it again.
   * `destinations`: every account an attempt was sent to, when known; the search then reads only their
   * transfers in the group, not the whole run's.
   */
  findTransfer(input: { payoutId: string; transferGroup: string; destinations?: readonly string[] }): Promise<{ transferId: string } | undefined>;
}

/** Thrown by the account calls, which are interactive: the API layer maps reason to an HTTP status. */
export class PayoutProviderError extends Error {
  constructor(
    readonly reason: TransferFailureReason,
    message: string,
    readonly retryable: boolean,
    /** The request parameter the provider refused, in its own naming (Stripe's `param`, e.g. `return_url`). */
    readonly param?: string,
  ) {
    super(message);
    this.name = 'PayoutProviderError';
  }
}

/** Both providers reject the same malformed requests, so dry-run runs catch bugs that Stripe would. */
export function assertValidTransfer(req: TransferRequest): void {
  if (!Number.isSafeInteger(req.amount) || req.amount <= 0) throw new RangeError(`transfer amount must be a positive integer of minor units, got ${req.amount}`);
  if (!/^[A-Za-z]{3}$/.test(req.currency)) throw new RangeError(`transfer currency must be an ISO 4217 code, got ${req.currency}`);
  // Stripe caps idempotency keys at 255 characters; a longer payoutId would be rejected on every attempt.
  if (!req.payoutId || req.payoutId.length > 255) throw new RangeError('transfer payoutId must be 1-255 characters');
  if (!req.destinationAccountId) throw new RangeError('transfer destinationAccountId is required');
}

/** One key per affiliate of an organisation: a double-submitted onboarding must not create two accounts. */
export function connectedAccountKey(orgId: string, affiliateId: string): string {
  return deterministicId('acct-create', orgId, affiliateId);
}
