import { z } from 'zod';

/**
 * All configuration comes from the environment, parsed once. Local defaults are safe: they point at
 * emulators and loopback, never at a cloud project, and secrets default to values generated per machine
 * (see functions/adapters/local-secrets.ts), never to strings committed here.
 */
export const configSchema = z.object({
  ABP_ENV: z.enum(['local', 'production']).default('local'),
  GOOGLE_CLOUD_PROJECT: z.string().min(1).default('abp-local'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('127.0.0.1'),
  /** Where `npm start` runs the emulators (the tests and benchmarks choose free ports of their own). */
  PUBSUB_EMULATOR_PORT: z.coerce.number().int().min(1).max(65535).default(8085),
  FIRESTORE_EMULATOR_PORT: z.coerce.number().int().min(1).max(65535).default(8086),
  /**
   * Local only: how the emulator's messages reach the workers. `relay` (a streaming pull that posts to the workers, as
   * fast as production's push) or `push` (the emulator's own push, two messages at a time per subscription).
   */
  LOCAL_DELIVERY: z.enum(['relay', 'push']).default('relay'),
  ABP_DATA_DIR: z.string().default('.data'),
  /** Base URL of the tracking endpoints, used to build tracking links and postback templates. */
  PUBLIC_BASE_URL: z.url().optional(),
  SUPABASE_URL: z.url().optional(),
  /** Required in production by the API, the one function that verifies tokens (see supabaseAnonKey). */
  SUPABASE_ANON_KEY: z.string().optional(),
  /** Lets the API resolve invited colleagues' emails to Supabase user ids. Not needed locally. */
  SUPABASE_SERVICE_ROLE_KEY: z.string().optional(),
  /** Expected `aud` of Supabase access tokens. */
  SUPABASE_JWT_AUDIENCE: z.string().default('authenticated'),
  /**
   * How long the API uses the project's JWKS before fetching it again: a key id it does not list is refused
   * without asking Supabase for that long, and a key rotated out stops verifying within it.
   */
  SUPABASE_JWKS_MAX_AGE_SECONDS: z.coerce.number().min(0).max(600).default(60),
  /**
   * The most live-counter documents one GET …/stats reads (a day of one campaign and affiliate is up to 8): past it
   * the API answers 400 asking for a narrower range, so that one request cannot read millions.
   */
  STATS_MAX_COUNTERS: z.coerce.number().int().min(1).default(20_000),
  ANALYTICS_BACKEND: z.enum(['duckdb', 'bigquery']).default('duckdb'),
  BIGQUERY_DATASET: z.string().default('abp_analytics'),
  /**
   * How long a report or event lookup may run in BigQuery before the API answers 503 and BigQuery stops the
   * job: inside the API function's 60 s timeout (infra/functions.ts), so the caller gets our answer, not a cut.
   */
  BIGQUERY_QUERY_TIMEOUT_SECONDS: z.coerce.number().min(1).max(50).default(30),
  STRIPE_SECRET_KEY: z.string().optional(),
  /**
   * Signing secrets of the two Stripe webhook endpoints the platform needs: one for events on the platform's own
   * account (transfer.reversed), one for events on the affiliates' connected accounts (account.updated, payout.*).
   * Stripe sends an endpoint one kind or the other, never both, and signs each endpoint with its own secret.
   */
  STRIPE_WEBHOOK_SECRET: z.string().optional(),
  STRIPE_CONNECT_WEBHOOK_SECRET: z.string().optional(),
  /** HMAC key for hashing visitor IPs and API keys. Required in production. */
  ABP_HASH_KEY: z.string().min(16).optional(),
  /** HMAC key that signs click ids so forged ones are rejected. Required in production. */
  ABP_CLICK_SIGNING_KEY: z.string().min(16).optional(),
  /** How long the click function trusts its in-memory copy of a link, campaign and org (pause takes effect within this). */
  LINK_CACHE_TTL_SECONDS: z.coerce.number().min(0).max(3600).default(10),
  /** Links an instance of the click function keeps in memory; links that do not exist are kept apart, in a tenth as many. */
  LINK_CACHE_MAX_ENTRIES: z.coerce.number().int().min(10).max(1_000_000).default(50_000),
  /** Local stand-in for Cloud Scheduler: how often `npm start` runs the commissions and payouts jobs. */
  COMMISSIONS_JOB_MINUTES: z.coerce.number().min(0.05).default(15),
  PAYOUTS_JOB_MINUTES: z.coerce.number().min(0.05).default(60),
  /**
   * Proxies that append to X-Forwarded-For in front of the tracking functions: 1 for Cloud Functions behind
   * Google's front end, 2 behind the external load balancer. The client IP is that many entries from the end.
   */
  XFF_TRUSTED_HOPS: z.coerce.number().int().min(1).max(5).default(1),
  /**
   * Tests only (test/helpers/stack.ts turns it on): the API answers 500 when a reply differs from its route's
   * documented response, so the OpenAPI document cannot drift unnoticed. Refused in production, where that
   * answer would be an outage over documentation.
   */
  ABP_CHECK_RESPONSES: z.stringbool().default(false),
});

export type Config = z.infer<typeof configSchema> & { publicBaseUrl: string; supabaseUrl: string };

let cached: Config | undefined;

export function parseConfig(env: NodeJS.ProcessEnv): Config {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const c = parsed.data;
  if (c.ABP_ENV === 'production') {
    const missing = (['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY', 'SUPABASE_URL', 'PUBLIC_BASE_URL'] as const).filter((k) => !c[k]);
    if (missing.length) throw new Error(`Invalid configuration: production requires ${missing.join(', ')}`);
    if (c.ABP_CHECK_RESPONSES) throw new Error('Invalid configuration: ABP_CHECK_RESPONSES is for tests; production must not set it');
  }
  const localBase = `http://${c.HOST}:${c.PORT}`;
  return {
    ...c,
    publicBaseUrl: (c.PUBLIC_BASE_URL ?? localBase).replace(/\/$/, ''),
    supabaseUrl: (c.SUPABASE_URL ?? localBase).replace(/\/$/, ''),
  };
}

/**
 * Settings only some functions are given (infra/functions.ts): each function asks for its own when it starts,
 * so a deploy without one fails at once instead of answering 500 on the first request that needs it.
 */
export function requireInProduction(keys: readonly (keyof Config)[], c: Config = config()): void {
  if (c.ABP_ENV !== 'production') return;
  const missing = keys.filter((k) => !c[k]);
  if (missing.length) throw new Error(`Invalid configuration: production requires ${missing.join(', ')}`);
}

/**
 * Production requires the anon key, but not in parseConfig: only the API is given it (infra/cloud-functions.ts),
 * and requiring it there would stop every other function. The API asks for it when it starts
 * (functions/api/index.ts), so a deploy without it fails at once.
 */
export function supabaseAnonKey(c: Config = config()): string {
  if (c.SUPABASE_ANON_KEY) return c.SUPABASE_ANON_KEY;
  if (c.ABP_ENV === 'production') throw new Error('Invalid configuration: production requires SUPABASE_ANON_KEY');
  return 'local-anon-key';
}

/** The process-wide configuration, parsed on first use. */
export function config(): Config {
  cached ??= parseConfig(process.env);
  return cached;
}

/** For tests and the local launcher, which set the environment before anything reads it. */
export function resetConfigForTests(): void {
  cached = undefined;
}
