import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { DataGoogleProject } from '@cdktf/provider-google/lib/data-google-project';
import { GoogleProvider } from '@cdktf/provider-google/lib/provider';
import { ProjectService } from '@cdktf/provider-google/lib/project-service';
import { SecretManagerSecret } from '@cdktf/provider-google/lib/secret-manager-secret';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import { GcsBackend, LocalBackend, TerraformOutput, TerraformStack } from 'cdktf';
import type { Construct } from 'constructs';
import { functionNames, localPaths, subscriptions } from '../shared/names';
import { analyticsStorage } from './bigquery';
import { deployFunctions } from './cloud-functions';
import type { InfraConfig } from './config';
import { bundleDir, bundleFiles, functionKeys, kebab, repoRoot, snake, type FunctionKey } from './entries';
import { firestoreDatabase } from './firestore';
import { functionSpecs, secretNames, type FunctionSpec, type SecretName } from './functions';
import { trackingLoadBalancer } from './load-balancer';
import { trackingRequestLogExclusion } from './logging';
import { alerting } from './monitoring';
import { eventBus, workerSubscriptions } from './pubsub';
import { scheduledJobs } from './scheduler';

/** The directory under cdktf.out/stacks/ that `terraform init && terraform apply` runs in. */
export const stackName = 'abp';

/** APIs the platform uses, keyed by the short name the modules refer to. */
const requiredApis = {
  resourceManager: 'cloudresourcemanager.googleapis.com',
  iam: 'iam.googleapis.com',
  functions: 'cloudfunctions.googleapis.com',
  run: 'run.googleapis.com',
  build: 'cloudbuild.googleapis.com',
  artifactRegistry: 'artifactregistry.googleapis.com',
  storage: 'storage.googleapis.com',
  logging: 'logging.googleapis.com',
  pubsub: 'pubsub.googleapis.com',
  firestore: 'firestore.googleapis.com',
  bigquery: 'bigquery.googleapis.com',
  scheduler: 'cloudscheduler.googleapis.com',
  secretManager: 'secretmanager.googleapis.com',
  /** The load balancer on the tracking domain. */
  compute: 'compute.googleapis.com',
  /** The alert policies (always created; they e-mail only with ABP_ALERT_EMAIL). */
  monitoring: 'monitoring.googleapis.com',
} as const;
export type ApiKey = keyof typeof requiredApis;

/** What the modules share: settings, enabled APIs and the identities and secrets they wire together. */
export interface StackContext {
  config: InfraConfig;
  project: string;
  region: string;
  /** Project number, for the Google-managed service agents. */
  projectNumber: string;
  apis: Partial<Record<ApiKey, ProjectService>>;
  specs: Record<FunctionKey, FunctionSpec>;
  /** Runtime identity of each function: one each, holding only that function's grants. */
  runtimeAccounts: Record<FunctionKey, ServiceAccount>;
  secrets: Record<SecretName, SecretManagerSecret>;
  bundleRoot: string;
}

export class MissingBundleError extends Error {}

/** Fails before any asset is hashed, naming every function whose bundle is missing. */
export function assertBundlesBuilt(bundleRoot: string): void {
  // A bundle built before the lockfile existed would deploy without one: it counts as missing.
  const missing = functionKeys.filter((k) => !bundleFiles.every((f) => existsSync(join(bundleDir(bundleRoot, k), f))));
  if (missing.length) {
    const rel = relative(repoRoot, bundleRoot);
    const where = rel && !rel.startsWith('..') ? rel : bundleRoot;
    throw new MissingBundleError(
      `Function bundle(s) missing in ${where}: ${missing.map((k) => functionNames[k]).join(', ')}.\n` +
        'Run `npm run build` first (it bundles every function into dist/functions/<name>), then synthesize again.',
    );
  }
}

/**
 * The whole platform in one stack: APIs, identities, secrets, Pub/Sub, Firestore, BigQuery, the functions, their
 * schedules, the load balancer on the tracking domain, alerting, and the exclusion of the tracking request logs.
 * Resources get readable logical ids (google_pubsub_topic.tracking_events, google_cloudfunctions2_function.fn_click …)
 * for `terraform state` and imports.
 */
export class AbpStack extends TerraformStack {
  readonly context: StackContext;

  constructor(scope: Construct, id: string, config: InfraConfig) {
    super(scope, id);
    assertBundlesBuilt(config.ABP_BUNDLE_DIR);
    const project = config.ABP_PROJECT_ID;
    const region = config.ABP_REGION;

    new GoogleProvider(this, 'google', { project, region, defaultLabels: { app: 'abp' } });
    if (config.ABP_STATE_BUCKET) new GcsBackend(this, { bucket: config.ABP_STATE_BUCKET, prefix: `terraform/${stackName}` });
    // Local state next to cdktf.json rather than inside cdktf.out (which synth rewrites), by a relative path so the
    // synthesized JSON does not depend on where the repository was checked out.
    else new LocalBackend(this, { path: `../../../terraform.${stackName}.tfstate` });

    const apis: StackContext['apis'] = {};
    for (const [key, service] of Object.entries(requiredApis) as [ApiKey, string][]) {
      // Leaving an API enabled on destroy: other things in the project may use it.
      apis[key] = new ProjectService(this, `api_${snake(key)}`, { service, disableOnDestroy: false });
    }

    const projectData = new DataGoogleProject(this, 'project', { projectId: project, dependsOn: [apis.resourceManager!] });
    const specs = functionSpecs(config);

    const runtimeAccounts = {} as Record<FunctionKey, ServiceAccount>;
    for (const key of functionKeys) {
      runtimeAccounts[key] = new ServiceAccount(this, `sa_${snake(key)}`, {
        accountId: `abp-${kebab(functionNames[key])}`,
        displayName: `ABP function ${functionNames[key]}`,
        description: `Runtime identity of the ${functionNames[key]} Cloud Function; holds only the roles that function uses.`,
        dependsOn: [apis.iam!],
      });
    }

    // Secrets without values: the operator adds versions with `gcloud secrets versions add` (docs/deploy.md).
    const secrets = {} as Record<SecretName, SecretManagerSecret>;
    for (const name of secretNames) {
      secrets[name] = new SecretManagerSecret(this, `secret_${name}`, {
        secretId: name,
        replication: { auto: {} },
        dependsOn: [apis.secretManager!],
      });
    }

    this.context = { config, project, region, projectNumber: projectData.number, apis, specs, runtimeAccounts, secrets, bundleRoot: config.ABP_BUNDLE_DIR };
    const bus = eventBus(this, this.context);
    firestoreDatabase(this, this.context);
    const analytics = analyticsStorage(this, this.context);
    const deployed = deployFunctions(this, this.context, { trackingTopic: bus.trackingTopic, analyticsTable: analytics.table });
    const subs = workerSubscriptions(this, this.context, bus, deployed.functions);
    scheduledJobs(this, this.context, deployed.functions);
    const lb = trackingLoadBalancer(this, this.context, config.ABP_TRACKING_DOMAIN, deployed.functions);
    alerting(this, this.context, config.ABP_ALERT_EMAIL);
    trackingRequestLogExclusion(this, this.context);

    for (const key of functionKeys) {
      new TerraformOutput(this, `url_${snake(key)}`, { value: deployed.functions[key].serviceConfig.uri, description: `URL of the ${functionNames[key]} function` });
    }
    new TerraformOutput(this, 'public_base_url', { value: deployed.publicBaseUrl, description: 'Base of tracking links, postback and pixel URLs, the API and the Stripe webhook (PUBLIC_BASE_URL)' });
    new TerraformOutput(this, 'stripe_webhook_url', { value: `${deployed.publicBaseUrl}${localPaths.stripeWebhook}`, description: 'The endpoint URL to register in Stripe (Developers → Webhooks)' });
    new TerraformOutput(this, 'tracking_ip', { value: lb.address, description: `Point an A record for ${config.ABP_TRACKING_DOMAIN} at this address` });
    new TerraformOutput(this, 'dead_letter_subscription', { value: subs.deadLetterInspection.name, description: `Pull subscription holding events the workers gave up on (${subscriptions.deadLetterInspection})` });
    new TerraformOutput(this, 'secrets_to_fill', { value: secretNames.join(' '), description: 'Secret Manager secrets that need a version before the functions can start' });
  }
}
