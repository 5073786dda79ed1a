import type { configSchema } from '../shared/config';
import type { TrackingEvent } from '../shared/domain/events';
import { subscriptions } from '../shared/names';
import type { InfraConfig } from './config';
import type { FunctionKey } from './entries';

/**
 * What each function is given: its trigger, its size, and the only permissions and secrets it uses. Pure data (no
 * cdktf), so the tests can state the least-privilege expectations against the same table the stack is built from.
 */

/** Secret Manager secrets; each is exposed to a function as the environment variable of the same name. */
export const secretNames = ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY', 'STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'STRIPE_CONNECT_WEBHOOK_SECRET', 'SUPABASE_SERVICE_ROLE_KEY'] as const satisfies readonly (keyof typeof configSchema.shape)[];
export type SecretName = (typeof secretNames)[number];

/**
 * shared/config.ts refuses to start in production without both HMAC keys, so every function must be given them,
 * including those whose code never reads them (analyticsWriter, the jobs, stripeWebhook). Moving that check into
 * secrets() (functions/adapters/local-secrets.ts) would let those four drop the two secrets: empty this list and
 * drop them from those functions' expectations in test/infra.test.ts.
 */
const productionConfigSecrets: SecretName[] = ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY'];

/** A permission, on the narrowest resource that carries it. */
export type Grant =
  | { on: 'project'; role: 'roles/datastore.user' | 'roles/datastore.viewer' | 'roles/bigquery.jobUser' }
  | { on: 'trackingTopic'; role: 'roles/pubsub.publisher' }
  | { on: 'analyticsTable'; role: 'roles/bigquery.dataEditor' | 'roles/bigquery.dataViewer' };

export type Trigger =
  /** Anyone may call it (allUsers may invoke); the code authenticates where it must. */
  | { kind: 'http'; access: 'public' }
  /** Cloud Scheduler calls it with an OIDC token; nobody else may invoke it. */
  | { kind: 'http'; access: 'scheduler'; schedule: string; description: string }
  /**
   * A push subscription on the tracking topic delivers each message with an OIDC token, except events of the type
   * the worker ignores: the subscription filters those out by the message's `type` attribute, which
   * functions/adapters/pubsub.ts sets to the event's type. Pub/Sub acknowledges them itself; they never invoke the worker.
   */
  | { kind: 'pubsub'; subscription: (typeof subscriptions)[keyof typeof subscriptions]; ignores: TrackingEvent['type'] };

export interface FunctionSpec {
  trigger: Trigger;
  /**
   * A tracking endpoint (click, postback, pixel): it reads the visitor's address and region from the load balancer's
   * headers, so it accepts traffic only through the load balancer. (Every public function is served on the tracking
   * domain; the API and the Stripe webhook trust no such header and stay reachable at their own URLs too.)
   */
  tracking: boolean;
  memory: '256Mi' | '512Mi' | '1Gi';
  /** vCPUs; concurrency above 1 needs at least 1. */
  cpu: '1' | '2';
  /** Requests one instance serves at once. */
  concurrency: number;
  minInstances: number;
  maxInstances: number;
  timeoutSeconds: number;
  /** Why these numbers (rendered into docs/deploy.md's table and the function's description). */
  sizing: string;
  grants: Grant[];
  /** Secrets the code reads. */
  secrets: SecretName[];
  /** Secrets it gets only because shared/config.ts demands them in production. */
  configOnlySecrets: SecretName[];
}

const firestoreReadWrite: Grant = { on: 'project', role: 'roles/datastore.user' };
const publishEvents: Grant = { on: 'trackingTopic', role: 'roles/pubsub.publisher' };

/** Postback and pixel: the same intake code, so the same sizing and rights. */
const conversionIntake: FunctionSpec = {
  trigger: { kind: 'http', access: 'public' },
  tracking: true,
  memory: '512Mi', cpu: '1', concurrency: 40, minInstances: 0, maxInstances: 50, timeoutSeconds: 30,
  sizing: 'Server-to-server conversions, far fewer than clicks; advertisers retry, so a cold start costs latency, not data.',
  grants: [firestoreReadWrite, publishEvents],
  secrets: ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY'],
  configOnlySecrets: [],
};

export function functionSpecs(c: Pick<InfraConfig, 'ABP_CLICK_MIN_INSTANCES'>): Record<FunctionKey, FunctionSpec> {
  const onlyForConfig = (used: SecretName[]) => productionConfigSecrets.filter((s) => !used.includes(s));
  return {
    api: {
      trigger: { kind: 'http', access: 'public' },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 40, minInstances: 0, maxInstances: 20, timeoutSeconds: 60,
      sizing: 'Admin traffic is light and bursty; mostly I/O-bound (Firestore, BigQuery reports), so one vCPU serves many requests at once. Cold starts are acceptable for an admin API.',
      // Publishes a conversion's new analytics version when it is approved, rejected or reversed by hand.
      grants: [firestoreReadWrite, publishEvents, { on: 'project', role: 'roles/bigquery.jobUser' }, { on: 'analyticsTable', role: 'roles/bigquery.dataViewer' }],
      // Hash key: API keys and postback tokens; Stripe: manual payout runs; service role: inviting members.
      secrets: ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY', 'STRIPE_SECRET_KEY', 'SUPABASE_SERVICE_ROLE_KEY'],
      configOnlySecrets: [],
    },
    click: {
      trigger: { kind: 'http', access: 'public' },
      tracking: true,
      memory: '512Mi', cpu: '1', concurrency: 80, minInstances: c.ABP_CLICK_MIN_INSTANCES, maxInstances: 100, timeoutSeconds: 30,
      sizing: 'The hot path: every redirect waits on it. Kept warm (min instances) so a visitor never waits for a cold start; one awaited publish and an in-memory link cache make it I/O-bound, so 80 concurrent requests share one vCPU.',
      grants: [{ on: 'project', role: 'roles/datastore.viewer' }, publishEvents],
      secrets: ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY'],
      configOnlySecrets: [],
    },
    postback: conversionIntake,
    pixel: { ...conversionIntake, sizing: 'Browser-side conversions on checkout pages: same work as the postback.' },

    stateWriter: {
      // Conversions are its own output, for analytics (functions/workers/state-writer.ts does nothing with them).
      trigger: { kind: 'pubsub', subscription: subscriptions.stateWriter, ignores: 'conversion' },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 80, minInstances: 0, maxInstances: 50, timeoutSeconds: 60,
      sizing: 'Clicks are written in group commits of the deliveries an instance has in flight (one read, one atomic batch per group; a capped campaign\'s conversions one transaction per campaign and group), so high concurrency is what makes groups: 80 concurrent pushes become a few commits.',
      // Publishes the conversion it books, for analytics.
      grants: [firestoreReadWrite, publishEvents],
      secrets: ['ABP_HASH_KEY', 'ABP_CLICK_SIGNING_KEY'],
      configOnlySecrets: [],
    },
    analyticsWriter: {
      // Raw postbacks are the state worker's input; analytics gets the conversion it books from them.
      trigger: { kind: 'pubsub', subscription: subscriptions.analyticsWriter, ignores: 'postback' },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 50, minInstances: 0, maxInstances: 20, timeoutSeconds: 60,
      sizing: 'Concurrent deliveries share one streaming insert (insertAll of up to 500 rows), pure I/O: high concurrency, few instances.',
      grants: [{ on: 'analyticsTable', role: 'roles/bigquery.dataEditor' }],
      secrets: [],
      configOnlySecrets: onlyForConfig([]),
    },
    commissionsJob: {
      trigger: { kind: 'http', access: 'scheduler', schedule: '*/15 * * * *', description: 'Approves pending conversions whose hold period has ended' },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 1, minInstances: 0, maxInstances: 1, timeoutSeconds: 840,
      sizing: 'A sweep every 15 minutes: one run at a time (max 1 instance, concurrency 1), allowed to run for most of its interval.',
      // Publishes its approvals' analytics versions, and any a transition could not send (conversion-analytics.ts).
      grants: [firestoreReadWrite, publishEvents],
      secrets: [],
      configOnlySecrets: onlyForConfig([]),
    },
    payoutsJob: {
      trigger: { kind: 'http', access: 'scheduler', schedule: '0 * * * *', description: "Hourly: finishes payouts an earlier run kept for a retry, then runs each organisation's due payout run" },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 1, minInstances: 0, maxInstances: 1, timeoutSeconds: 1800,
      sizing: 'Hourly; one run at a time. 30 minutes is the longest a Cloud Scheduler HTTP attempt may wait.',
      grants: [firestoreReadWrite],
      secrets: ['STRIPE_SECRET_KEY'],
      configOnlySecrets: onlyForConfig([]),
    },
    stripeWebhook: {
      trigger: { kind: 'http', access: 'public' },
      tracking: false,
      memory: '512Mi', cpu: '1', concurrency: 20, minInstances: 0, maxInstances: 10, timeoutSeconds: 60,
      sizing: 'Stripe retries failed deliveries for days, so cold starts are harmless; low volume.',
      grants: [firestoreReadWrite],
      // The Stripe key too: two account.updated events of one second that disagree are settled by reading the account.
      secrets: ['STRIPE_WEBHOOK_SECRET', 'STRIPE_CONNECT_WEBHOOK_SECRET', 'STRIPE_SECRET_KEY'],
      configOnlySecrets: onlyForConfig([]),
    },
  };
}

/** Every secret a function's environment receives. */
export function secretsOf(spec: FunctionSpec): SecretName[] {
  return [...new Set([...spec.secrets, ...spec.configOnlySecrets])];
}
