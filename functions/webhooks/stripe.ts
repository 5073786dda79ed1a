import * as functions from '@google-cloud/functions-framework';
import { config, requireInProduction } from '../../shared/config';
import { functionNames } from '../../shared/names';
import { parseStripeWebhook } from '../adapters/payouts/stripe-webhook';
import { applyStripeEvent } from '../services/stripe-events';
import { answerFrameworkErrors } from '../framework-errors';

/** POST /webhooks/stripe: signature-verified against the raw body, each event applied once. */
export async function handleStripeWebhook(req: functions.Request, res: functions.Response): Promise<void> {
  // Both endpoints (the platform's events and the connected accounts') may post here: an event is taken when it is
  // signed with either one's secret.
  const secrets = [config().STRIPE_WEBHOOK_SECRET, config().STRIPE_CONNECT_WEBHOOK_SECRET].filter((s): s is string => !!s);
  if (req.method !== 'POST') return void res.status(405).json({ error: { code: 'method_not_allowed', message: 'Use POST', details: [] } });
  if (!secrets.length) return void res.status(503).json({ error: { code: 'unavailable', message: 'Neither STRIPE_WEBHOOK_SECRET nor STRIPE_CONNECT_WEBHOOK_SECRET is configured', details: [] } });
  const raw = (req as functions.Request & { rawBody?: Buffer }).rawBody ?? Buffer.from('');
  const signature = req.headers['stripe-signature'] as string | undefined;
  let parsed = parseStripeWebhook(raw, signature, secrets[0]!);
  for (const secret of secrets.slice(1)) if (!parsed.ok) parsed = parseStripeWebhook(raw, signature, secret);
  if (!parsed.ok) return void res.status(400).json({ error: { code: 'bad_request', message: parsed.message, details: [{ field: 'stripe-signature', message: 'does not match the payload' }] } });
  try {
    const outcome = await applyStripeEvent(parsed.event);
    res.json({ received: true, outcome });
  } catch (err) {
    console.error(JSON.stringify({ severity: 'ERROR', message: 'stripe webhook failed', error: String((err as Error)?.stack ?? err) }));
    // A 5xx makes Stripe retry later; the event id dedupe makes the retry safe.
    res.status(500).json({ error: { code: 'internal', message: 'Temporarily unable to process the event', details: [] } });
  }
}

// Locally the webhook answers 503 until a secret is set; a production deploy without both, or without the Stripe key it reads accounts with, fails here instead.
requireInProduction(['STRIPE_WEBHOOK_SECRET', 'STRIPE_CONNECT_WEBHOOK_SECRET', 'STRIPE_SECRET_KEY']);
answerFrameworkErrors();
functions.http(functionNames.stripeWebhook, handleStripeWebhook);
