import { CloudRunV2ServiceIamMember } from '@cdktf/provider-google/lib/cloud-run-v2-service-iam-member';
import { CloudSchedulerJob } from '@cdktf/provider-google/lib/cloud-scheduler-job';
import type { Cloudfunctions2Function } from '@cdktf/provider-google/lib/cloudfunctions2-function';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import type { Construct } from 'constructs';
import { functionNames } from '../shared/names';
import { runServiceOf } from './cloud-functions';
import { functionKeys, kebab, snake, type FunctionKey } from './entries';
import type { StackContext } from './stack';

/** Cloud Scheduler's limit for an HTTP target's attempt deadline. */
const maxAttemptDeadlineSeconds = 1800;

/**
 * A Cloud Scheduler job per scheduled function, calling its URL with an OIDC token of a dedicated identity that
 * may invoke the scheduled functions and nothing else. The functions themselves are not public.
 */
export function scheduledJobs(scope: Construct, c: StackContext, functions: Record<FunctionKey, Cloudfunctions2Function>): CloudSchedulerJob[] {
  const scheduler = new ServiceAccount(scope, 'sa_scheduler', {
    accountId: 'abp-scheduler',
    displayName: 'ABP Cloud Scheduler',
    description: 'OIDC identity of the ABP scheduler jobs; may only invoke the scheduled functions.',
    dependsOn: [c.apis.iam!],
  });
  const jobs: CloudSchedulerJob[] = [];
  for (const key of functionKeys) {
    const spec = c.specs[key];
    if (spec.trigger.kind !== 'http' || spec.trigger.access !== 'scheduler') continue;
    const fn = functions[key];
    const id = snake(key);
    const invoker = new CloudRunV2ServiceIamMember(scope, `${id}_scheduler_invoker`, {
      name: runServiceOf(fn), location: c.region, role: 'roles/run.invoker', member: `serviceAccount:${scheduler.email}`,
    });
    const url = fn.serviceConfig.uri;
    jobs.push(
      new CloudSchedulerJob(scope, `job_${id}`, {
        name: kebab(functionNames[key]),
        region: c.region,
        description: spec.trigger.description,
        schedule: spec.trigger.schedule,
        timeZone: 'Etc/UTC',
        attemptDeadline: `${Math.min(spec.timeoutSeconds, maxAttemptDeadlineSeconds)}s`,
        // A failed run is retried a couple of times with backoff; the jobs are idempotent, and the next tick runs anyway.
        retryConfig: { retryCount: 2, minBackoffDuration: '30s', maxBackoffDuration: '300s' },
        httpTarget: {
          httpMethod: 'POST',
          uri: url,
          oidcToken: { serviceAccountEmail: scheduler.email, audience: url },
        },
        dependsOn: [c.apis.scheduler!, invoker],
      }),
    );
  }
  return jobs;
}
