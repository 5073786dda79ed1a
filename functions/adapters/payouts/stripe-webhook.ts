import Stripe from 'stripe';

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

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

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
  // Typed access would trust the payload's shape; a signed but unexpected body is still refused, not crashed on.
  if (!isRecord(event)) return { ok: false, message: 'Webhook payload is not an object' };
  const { id, type, account, created, data } = event;
  if (typeof id !== 'string' || typeof type !== 'string' || typeof created !== 'number' || !isRecord(data) || !isRecord(data.object)) {
    return { ok: false, message: 'Webhook payload is not a Stripe event' };
  }
  return {
    ok: true,
    event: { id, type, created, data: { object: data.object }, ...(typeof account === 'string' ? { account } : {}) },
  };
}
