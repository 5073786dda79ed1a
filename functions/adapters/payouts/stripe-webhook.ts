import Stripe from 'stripe';
import { z } from 'zod';
import { currencySchema, minorUnitsSchema } from '../../../shared/money';
import { fromStripeAmount } from './stripe-units';

/** The part of a Stripe event the platform acts on; the rest stays in Stripe's dashboard. */
export interface StripeWebhookEvent {
  /** Callers dedupe on it, because Stripe delivers at least once. */
  id: string;
  type: string;
  /** Set for Connect events (e.g. account.updated), naming the affiliate's connected account. */
  account?: string;
  /** Seconds since the epoch; events can arrive out of order, so handlers compare it, not arrival time. */
  created: number;
  data: { object: Record<string, unknown> };
}

export type ParsedStripeWebhook = { ok: true; event: StripeWebhookEvent } | { ok: false; message: string };

const stripeId = z.string().min(1, 'must be a non-empty Stripe id');

/** The envelope every Stripe event has (https://docs.stripe.com/api/events/object); the object is read per type. */
const eventEnvelope = z.object({
  id: stripeId,
  type: z.string(),
  // Only Connect events carry it; anything but a non-empty string is treated as absent, as before.
  account: z.string().nullish().catch(undefined),
  created: z.number().int(),
  data: z.object({ object: z.record(z.string(), z.unknown()) }),
});

/**
 * Verifies the Stripe-Signature header over the exact raw bytes received (a re-serialised body would not match)
 * and rejects timestamps outside stripe-node's default tolerance (300 s) to stop replays. Never throws: the
 * HTTP handler answers 400 on ok:false so Stripe shows the failure and retries.
 */
export function parseStripeWebhook(rawBody: Buffer | string, signatureHeader: string | undefined, secret: string): ParsedStripeWebhook {
  if (!signatureHeader) return { ok: false, message: 'Missing Stripe-Signature header' };
  if (!secret) return { ok: false, message: 'No webhook secret configured' };
  let event: unknown;
  try {
    event = Stripe.webhooks.constructEvent(rawBody, signatureHeader, secret);
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
  // Typed access would trust the payload's shape; a signed body without an event id cannot even be recorded, so it
  // is refused, not crashed on. What each event type reads of data.object is checked by stripeObjectSchemas.
  const parsed = eventEnvelope.safeParse(event);
  if (!parsed.success) return { ok: false, message: 'Webhook payload is not a Stripe event' };
  const { id, type, account, created, data } = parsed.data;
  return { ok: true, event: { id, type, created, data: { object: data.object }, ...(account ? { account } : {}) } };
}

/**
 * The part of `data.object` each handled event type reads, as Stripe's API reference and example objects
 * (stripe/openapi fixtures3.json) shape it. Stripe sends currencies lower-case ("usd"); they come out
 * upper-case, as this codebase stores every currency. Amounts are integer minor units.
 */
const payoutObject = z
  .object({
    // https://docs.stripe.com/api/payouts/object
    id: stripeId,
    amount: minorUnitsSchema,
    currency: currencySchema,
    failure_code: z.string().nullish(),
  })
  // In the ledger's minor units: Stripe counts some currencies in a unit of its own (stripe-units.ts).
  .transform((p) => ({ ...p, amount: fromStripeAmount(p.amount, p.currency) }));

export const stripeObjectSchemas = {
  // https://docs.stripe.com/api/accounts/object: payouts_enabled is a boolean on every account.
  'account.updated': z.object({ id: stripeId, payouts_enabled: z.boolean() }),
  // https://docs.stripe.com/api/transfers/object: amount_reversed is the running total reversed so far.
  'transfer.reversed': z
    .object({
      id: stripeId,
      amount: minorUnitsSchema,
      amount_reversed: minorUnitsSchema,
      currency: currencySchema,
      // Metadata values are strings; a transfer we did not make may carry none of ours (the service ignores it).
      metadata: z.record(z.string(), z.string()).nullish(),
    })
    .refine((t) => t.amount_reversed <= t.amount, { message: 'must not exceed amount', path: ['amount_reversed'] })
    // In the ledger's minor units, as the transfer was sent (stripe-units.ts).
    .transform((t) => ({ ...t, amount: fromStripeAmount(t.amount, t.currency), amount_reversed: fromStripeAmount(t.amount_reversed, t.currency) })),
  'payout.paid': payoutObject,
  'payout.failed': payoutObject,
} as const;

export type StripeObjectType = keyof typeof stripeObjectSchemas;
export type StripeObject<T extends StripeObjectType> = z.output<(typeof stripeObjectSchemas)[T]>;
