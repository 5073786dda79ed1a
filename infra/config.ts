import { z } from 'zod';
import { configSchema } from '../shared/config';
import { defaultBundleRoot } from './entries';

/**
 * The deployment's settings, from the environment of `npm run synth`. All but ABP_TRACKING_DOMAIN have a default so
 * that the tests and an offline look at the plan can synthesize with a placeholder project; main.ts refuses to
 * synthesize while a placeholder is still in use, unless ABP_SYNTH_WITH_PLACEHOLDERS=1 says the output will not be
 * applied (placeholderSettings). No secret is read here: secret values go into Secret Manager with `gcloud secrets
 * versions add`, never through this file.
 */
const placeholderProject = 'abp-placeholder-project';
const placeholderSupabaseUrl = 'https://your-project-ref.supabase.co';
const placeholderAnonKey = 'set-SUPABASE_ANON_KEY-before-apply';

/** What the functions would default to when the variable is unset, so infra and code cannot disagree. */
const runtimeDefaults = configSchema.parse({});

/**
 * Why the tracking domain is required: the API hands out addresses on one base URL (tracking links, the postback and
 * pixel templates advertisers install, Stripe onboarding return links, the OpenAPI servers entry), and only the load
 * balancer on this domain serves every one of those paths, as the local gateway does. A function's own URL serves
 * that function alone: a postback template built on the click function's URL records nothing.
 */
export const trackingDomainRequired =
  'is required: the domain (e.g. track.example.com) whose HTTPS load balancer serves tracking links, /postback, /pixel, ' +
  'the API (/v1/) and the Stripe webhook. Without it the postback and pixel URLs the API hands to advertisers would reach ' +
  'a function that cannot record them (docs/deploy.md, "Tracking domain")';

const hostname = z
  .string({ error: (issue) => (issue.input === undefined ? trackingDomainRequired : undefined) })
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'must be a lowercase DNS name such as track.example.com');

export const infraConfigSchema = z.object({
  /** The Google Cloud project id to deploy into. */
  ABP_PROJECT_ID: z
    .string()
    .regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'must be a Google Cloud project id (6-30 lowercase letters, digits, hyphens)')
    .default(placeholderProject),
  /** Region of the functions, Pub/Sub push endpoints, the scheduler jobs and the source bucket. */
  ABP_REGION: z.string().regex(/^[a-z]+-[a-z]+\d+$/, 'must be a region such as us-central1').default('us-central1'),
  /** Firestore location (a region or a multi-region such as nam5 / eur3); default: ABP_REGION. Cannot change later. */
  ABP_FIRESTORE_LOCATION: z.string().optional(),
  /** BigQuery dataset location (a region or US / EU); default: ABP_REGION. */
  ABP_BIGQUERY_LOCATION: z.string().optional(),
  /**
   * The public domain (e.g. track.example.com), required: the external HTTPS load balancer serves every public
   * function on it under the paths of the local gateway (/c/, /postback, /pixel, /v1/, /webhooks/stripe).
   */
  ABP_TRACKING_DOMAIN: hostname,
  /**
   * Override of the base URL the API prints in tracking links, postback templates and onboarding links (default
   * https://ABP_TRACKING_DOMAIN). Only for another proxy in front of the load balancer that serves the same paths.
   */
  ABP_PUBLIC_BASE_URL: z.url().optional(),
  /** Where alerts (dead-lettered events, a stuck worker) are e-mailed. Optional. */
  ABP_ALERT_EMAIL: z.email().optional(),
  /** A GCS bucket (created beforehand) for the Terraform state; local state in cdktf.out when unset. */
  ABP_STATE_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/, 'must be a bucket name').optional(),
  /** Directory of the bundles written by `npm run build`. */
  ABP_BUNDLE_DIR: z.string().default(defaultBundleRoot),
  /** Warm instances of the click function (the hot path). 0 saves the idle cost at the price of cold starts. */
  ABP_CLICK_MIN_INSTANCES: z.coerce.number().int().min(0).max(100).default(1),
  /** Drop analytics partitions older than this many days (default: keep forever). */
  ABP_ANALYTICS_RETENTION_DAYS: z.coerce.number().int().min(1).optional(),
  /** Supabase project URL: the API verifies access tokens against it. Not a secret. */
  SUPABASE_URL: z.url().default(placeholderSupabaseUrl),
  /** Supabase anon (publishable) key: public by design, it ships in every browser client. Not a secret. */
  SUPABASE_ANON_KEY: z.string().min(1).default(placeholderAnonKey),
  BIGQUERY_DATASET: z.string().regex(/^\w{1,1024}$/, 'must be a BigQuery dataset id').default(runtimeDefaults.BIGQUERY_DATASET),
  /** Passed through to the tracking functions when set, validated as they validate it (shared/config.ts). */
  LINK_CACHE_TTL_SECONDS: configSchema.shape.LINK_CACHE_TTL_SECONDS.unwrap().optional(),
  LINK_CACHE_MAX_ENTRIES: configSchema.shape.LINK_CACHE_MAX_ENTRIES.unwrap().optional(),
});

export type InfraConfig = z.infer<typeof infraConfigSchema>;

/** Only the variables this schema knows are read, and empty strings count as unset. */
export function loadInfraConfig(env: NodeJS.ProcessEnv): InfraConfig {
  const known = Object.keys(infraConfigSchema.shape);
  const picked = Object.fromEntries(known.filter((k) => env[k] !== undefined && env[k] !== '').map((k) => [k, env[k]]));
  const parsed = infraConfigSchema.safeParse(picked);
  if (!parsed.success) {
    throw new Error(`Invalid deployment settings:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  return parsed.data;
}

/** Settings still at a placeholder: fine for an offline synth, wrong for `terraform apply`. */
export function placeholderWarnings(c: InfraConfig): string[] {
  const out: string[] = [];
  if (c.ABP_PROJECT_ID === placeholderProject) out.push(`ABP_PROJECT_ID is the placeholder "${placeholderProject}"`);
  if (c.SUPABASE_URL === placeholderSupabaseUrl) out.push('SUPABASE_URL is a placeholder');
  if (c.SUPABASE_ANON_KEY === placeholderAnonKey) out.push('SUPABASE_ANON_KEY is a placeholder');
  return out;
}

/** The opt-in to synthesize with placeholders, for an offline synth whose output is never applied. */
export const withPlaceholdersVariable = 'ABP_SYNTH_WITH_PLACEHOLDERS';

export class PlaceholderSettingsError extends Error {}

/**
 * Why placeholders stop synth: applied, they deploy "successfully" and then fail at run time (with the placeholder
 * Supabase settings every sign-in to the API is refused), which nothing in the apply reports. Returns the warnings
 * to print when the opt-in allows them.
 */
export function placeholderSettings(c: InfraConfig, env: NodeJS.ProcessEnv): string[] {
  const found = placeholderWarnings(c);
  if (found.length && env[withPlaceholdersVariable] !== '1') {
    throw new PlaceholderSettingsError(
      `Placeholder deployment settings:\n${found.map((w) => `  ${w}`).join('\n')}\n` +
        'Export the real values (docs/deploy.md, "Deploy from a fresh project", step 2), then synthesize again. ' +
        `For an offline synth that will not be applied, set ${withPlaceholdersVariable}=1.`,
    );
  }
  return found;
}
