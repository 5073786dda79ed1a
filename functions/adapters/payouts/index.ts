import { config } from '../../../shared/config';
import { createDryRunProvider } from './dry-run-provider';
import type { PayoutProvider } from './provider';
import { createStripeProvider, type StripeProviderOptions } from './stripe-provider';

export * from './provider';
export type { StripeProviderOptions } from './stripe-provider';

export interface PayoutProviderSettings {
  stripeSecretKey?: string;
  env: 'local' | 'production';
}

/**
 * Chooses the provider from settings rather than reading the environment itself, so tests and the local launcher
 * can build one explicitly; `stripe` overrides (host, port, …) are only for pointing at a local stand-in.
 */
export function createPayoutProvider(settings: PayoutProviderSettings, stripe: Omit<StripeProviderOptions, 'secretKey'> = {}): PayoutProvider {
  const key = settings.stripeSecretKey;
  if (!key) {
    // Dry-run reports every transfer as paid; in production that would mark affiliates paid with no money moved.
    if (settings.env === 'production') throw new Error('STRIPE_SECRET_KEY is required in production');
    return createDryRunProvider();
  }
  // A live key on a developer machine would move real money from local experiments.
  if (settings.env === 'local' && key.startsWith('sk_live_')) throw new Error('Refusing a live Stripe key with ABP_ENV=local');
  return createStripeProvider({ ...stripe, secretKey: key });
}

let cached: PayoutProvider | undefined;

/** The process-wide provider, built once from config so the Stripe client's connection pool is reused. */
export function payoutProvider(): PayoutProvider {
  const c = config();
  cached ??= createPayoutProvider({ stripeSecretKey: c.STRIPE_SECRET_KEY, env: c.ABP_ENV });
  return cached;
}

/** For tests that change the configuration between cases. */
export function resetPayoutProviderForTests(): void {
  cached = undefined;
}

/** Fault and contract tests swap in a provider (a Stripe client aimed at the local stand-in, or one that crashes). */
export function setPayoutProviderForTests(provider: PayoutProvider | undefined): void {
  cached = provider;
}
