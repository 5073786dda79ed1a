import { LoggingProjectExclusion } from '@cdktf/provider-google/lib/logging-project-exclusion';
import type { Construct } from 'constructs';
import { serviceName } from './cloud-functions';
import { functionKeys } from './entries';
import { anyService } from './monitoring';
import type { StackContext } from './stack';

/** Cloud Run's request log (one entry per request, with httpRequest.remoteIp), as its logName spells it. */
const requestLogId = 'run.googleapis.com%2Frequests';

/**
 * Keeps the tracking functions' request logs out of Cloud Logging. Cloud Run writes one per request, carrying the
 * visitor's address (httpRequest.remoteIp) and the full URL (click ids, pixel tokens), and a visitor's raw IP is never
 * stored (shared/domain/visitor.ts). The exclusion drops them on the _Default sink, before they are stored; the
 * functions' own logs (their errors) and Cloud Run's metrics, which alerting reads, are unaffected. The other
 * functions keep their request logs: their callers are operators, advertisers, Stripe and Google's own services.
 */
export function trackingRequestLogExclusion(scope: Construct, c: StackContext): LoggingProjectExclusion {
  const tracking = functionKeys.filter((k) => c.specs[k].tracking);
  return new LoggingProjectExclusion(scope, 'exclude_tracking_request_logs', {
    name: 'abp-tracking-request-logs',
    description: `Request logs of ${tracking.map(serviceName).join(', ')}: they hold visitors' IP addresses, which ABP never stores.`,
    // Stated, so that an apply turns back on an exclusion someone disabled by hand.
    disabled: false,
    filter: `logName = "projects/${c.project}/logs/${requestLogId}" AND resource.type = "cloud_run_revision" AND ${anyService(tracking)}`,
    dependsOn: [c.apis.logging!],
  });
}
