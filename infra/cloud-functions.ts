import type { BigqueryTable } from '@cdktf/provider-google/lib/bigquery-table';
import { BigqueryTableIamMember } from '@cdktf/provider-google/lib/bigquery-table-iam-member';
import { CloudRunV2ServiceIamMember } from '@cdktf/provider-google/lib/cloud-run-v2-service-iam-member';
import { Cloudfunctions2Function } from '@cdktf/provider-google/lib/cloudfunctions2-function';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import type { PubsubTopic } from '@cdktf/provider-google/lib/pubsub-topic';
import { PubsubTopicIamMember } from '@cdktf/provider-google/lib/pubsub-topic-iam-member';
import { SecretManagerSecretIamMember } from '@cdktf/provider-google/lib/secret-manager-secret-iam-member';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import { StorageBucket } from '@cdktf/provider-google/lib/storage-bucket';
import { StorageBucketObject } from '@cdktf/provider-google/lib/storage-bucket-object';
import { AssetType, TerraformAsset, type ITerraformDependable } from 'cdktf';
import type { Construct } from 'constructs';
import type { configSchema } from '../shared/config';
import { functionNames } from '../shared/names';
import { oneVcpuNodeOptions } from '../shared/runtime-flags';
import { bundleDir, functionKeys, kebab, snake, type FunctionKey } from './entries';
import { secretsOf } from './functions';
import type { StackContext } from './stack';

/** Cloud Functions gen2 on Node.js 22 (the local toolchain is Node 20; the bundles target node22). */
export const runtime = 'nodejs22';

type EnvName = keyof typeof configSchema.shape;

export interface DeployedFunctions {
  functions: Record<FunctionKey, Cloudfunctions2Function>;
  publicBaseUrl: string;
}

/**
 * One gen2 Cloud Function per entry point, each from its own bundle (dist/functions/<name>, zipped by
 * TerraformAsset and uploaded under a name carrying the content hash, so a code change redeploys exactly the
 * functions whose bundle changed), with its own runtime service account holding only the grants in
 * infra/functions.ts.
 */
export function deployFunctions(
  scope: Construct,
  c: StackContext,
  targets: { trackingTopic: PubsubTopic; analyticsTable: BigqueryTable },
): DeployedFunctions {
  const { config } = c;
  const source = new StorageBucket(scope, 'function_source', {
    // Project ids are globally unique, so this bucket name is too.
    name: `${c.project}-abp-function-source`,
    location: c.region,
    uniformBucketLevelAccess: true,
    publicAccessPrevention: 'enforced',
    forceDestroy: true, // only build artifacts live here
    dependsOn: [c.apis.storage!],
  });

  // Builds run as their own identity rather than the default compute account (which new projects no longer make
  // an Editor): it may run Cloud Build, write the image and its logs, and read the uploaded source.
  const builder = new ServiceAccount(scope, 'sa_build', {
    accountId: 'abp-build',
    displayName: 'ABP function builds',
    description: 'Cloud Build identity for building the ABP functions from their uploaded bundles.',
    dependsOn: [c.apis.iam!],
  });
  const builderGrants: ITerraformDependable[] = [
    new ProjectIamMember(scope, 'build_builder', { project: c.project, role: 'roles/cloudbuild.builds.builder', member: `serviceAccount:${builder.email}`, dependsOn: [c.apis.resourceManager!] }),
  ];

  // The load balancer on the tracking domain serves every public function under its local gateway path
  // (infra/load-balancer.ts), so every address the API builds on this base reaches the function it names.
  const publicBaseUrl = config.ABP_PUBLIC_BASE_URL?.replace(/\/$/, '') ?? `https://${config.ABP_TRACKING_DOMAIN}`;

  const functions = {} as Record<FunctionKey, Cloudfunctions2Function>;
  for (const key of functionKeys) {
    const spec = c.specs[key];
    const id = snake(key);
    const name = serviceName(key);
    const sa = c.runtimeAccounts[key];
    const member = `serviceAccount:${sa.email}`;

    // The function's grants, on the narrowest resource that carries each.
    const grants: ITerraformDependable[] = spec.grants.map((g) => {
      const gid = `${id}_${g.role.replace(/^roles\//, '').replace(/\W/g, '_')}`;
      switch (g.on) {
        case 'project':
          return new ProjectIamMember(scope, gid, { project: c.project, role: g.role, member, dependsOn: [c.apis.resourceManager!] });
        case 'trackingTopic':
          return new PubsubTopicIamMember(scope, gid, { topic: targets.trackingTopic.id, role: g.role, member });
        case 'analyticsTable':
          return new BigqueryTableIamMember(scope, gid, { datasetId: targets.analyticsTable.datasetId, tableId: targets.analyticsTable.tableId, role: g.role, member });
      }
    });
    // Gen2 checks at deploy time that the runtime identity may read each secret it mounts.
    for (const secret of secretsOf(spec)) {
      grants.push(new SecretManagerSecretIamMember(scope, `${id}_reads_${secret}`, { secretId: c.secrets[secret].id, role: 'roles/secretmanager.secretAccessor', member }));
    }

    const asset = new TerraformAsset(scope, `bundle_${id}`, { path: bundleDir(c.bundleRoot, key), type: AssetType.ARCHIVE });
    const object = new StorageBucketObject(scope, `source_${id}`, {
      bucket: source.name,
      name: `${name}-${asset.assetHash}.zip`,
      source: asset.path,
    });

    const env: Partial<Record<EnvName | 'NODE_OPTIONS', string>> = {
      ABP_ENV: 'production',
      GOOGLE_CLOUD_PROJECT: c.project,
      PUBLIC_BASE_URL: publicBaseUrl,
      SUPABASE_URL: config.SUPABASE_URL,
      ANALYTICS_BACKEND: 'bigquery',
      BIGQUERY_DATASET: config.BIGQUERY_DATASET,
    };
    if (key === 'api') env.SUPABASE_ANON_KEY = config.SUPABASE_ANON_KEY;
    if (spec.cpu === '1') env.NODE_OPTIONS = oneVcpuNodeOptions.join(' ');
    if (spec.tracking) {
      // Behind the load balancer the client IP is two entries from the end of X-Forwarded-For (LB, then Google's front end).
      env.XFF_TRUSTED_HOPS = '2';
      if (config.LINK_CACHE_TTL_SECONDS !== undefined) env.LINK_CACHE_TTL_SECONDS = String(config.LINK_CACHE_TTL_SECONDS);
      if (config.LINK_CACHE_MAX_ENTRIES !== undefined) env.LINK_CACHE_MAX_ENTRIES = String(config.LINK_CACHE_MAX_ENTRIES);
    }

    const ingressSettings =
      spec.trigger.kind === 'pubsub' || spec.trigger.access === 'scheduler'
        ? // Pub/Sub push and Cloud Scheduler of the same project count as internal traffic; IAM still applies.
          'ALLOW_INTERNAL_ONLY'
        : spec.tracking
          ? // Only through the load balancer, so X-Client-Region and X-Forwarded-For come from it.
            'ALLOW_INTERNAL_AND_GCLB'
          : // The API and the Stripe webhook trust no proxy header: reachable through the load balancer and at their own URLs.
            'ALLOW_ALL';

    const fn = new Cloudfunctions2Function(scope, `fn_${id}`, {
      name,
      location: c.region,
      description: `${functionNames[key]}: ${spec.sizing}`.slice(0, 500),
      buildConfig: {
        runtime,
        entryPoint: functionNames[key],
        serviceAccount: builder.id,
        source: { storageSource: { bucket: source.name, object: object.name } },
      },
      serviceConfig: {
        availableMemory: spec.memory,
        availableCpu: spec.cpu,
        maxInstanceRequestConcurrency: spec.concurrency,
        minInstanceCount: spec.minInstances,
        maxInstanceCount: spec.maxInstances,
        timeoutSeconds: spec.timeoutSeconds,
        serviceAccountEmail: sa.email,
        ingressSettings,
        allTrafficOnLatestRevision: true,
        environmentVariables: env,
        secretEnvironmentVariables: secretsOf(spec).map((secret) => ({ key: secret, projectId: c.project, secret: c.secrets[secret].secretId, version: 'latest' })),
      },
      dependsOn: [c.apis.functions!, c.apis.run!, c.apis.build!, c.apis.artifactRegistry!, ...builderGrants, ...grants],
    });
    functions[key] = fn;

    if (spec.trigger.kind === 'http' && spec.trigger.access === 'public') {
      // Public endpoints: the click, postback and pixel answer anyone; the API and the Stripe webhook authenticate in code.
      new CloudRunV2ServiceIamMember(scope, `${id}_public_invoker`, { name: runServiceOf(fn), location: c.region, role: 'roles/run.invoker', member: 'allUsers' });
    }
  }
  return { functions, publicBaseUrl };
}

/**
 * A function's name, which is also the name of the Cloud Run service a 2nd-gen function runs as: the
 * resource.labels.service_name of its logs and metrics. Known before apply, unlike runServiceOf's full name.
 */
export function serviceName(key: FunctionKey): string {
  return kebab(functionNames[key]);
}

/**
 * The Cloud Run service behind a function, for its invoker grants. Not the function's name: that is fixed in the
 * configuration, so a grant on it would outlive a replaced function (`terraform apply -replace`, or a change that
 * forces one) in the plan, while the new service starts with no grants at all and answers 403 to everyone until a
 * second apply. The service's full name is only known once the function exists, so a grant on it is replaced
 * with the function.
 */
export function runServiceOf(fn: Cloudfunctions2Function): string {
  return fn.serviceConfig.service;
}
