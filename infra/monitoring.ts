import { MonitoringAlertPolicy } from '@cdktf/provider-google/lib/monitoring-alert-policy';
import { MonitoringNotificationChannel } from '@cdktf/provider-google/lib/monitoring-notification-channel';
import type { Construct } from 'constructs';
import { subscriptions } from '../shared/names';
import { serviceName } from './cloud-functions';
import { functionKeys, type FunctionKey } from './entries';
import type { StackContext } from './stack';

/** A Logging query matching any of the functions' services (or, with `label`, of the scheduler jobs named after them). */
export function anyService(keys: FunctionKey[], label = 'resource.labels.service_name'): string {
  return `(${keys.map((k) => `${label} = "${serviceName(k)}"`).join(' OR ')})`;
}

/** The same, as a Monitoring filter, which takes a regular expression for a set of values (names are [a-z-]). */
function anyServiceMetric(keys: FunctionKey[]): string {
  return `resource.labels.service_name = monitoring.regex.full_match("${keys.map(serviceName).join('|')}")`;
}

/**
 * Alert policies for events landing in the dead-letter topic (a worker gave up on them after maxDeliveryAttempts),
 * for a worker falling behind, for a scheduled job that fails and for a public function answering server errors.
 * Always created, so the conditions are watched whatever the settings: without ABP_ALERT_EMAIL their incidents open
 * in Cloud Monitoring (Alerting → Incidents) and notify nobody; with it they are also e-mailed to that address. (A
 * channel added by hand in the console would be removed by the next apply.)
 */
export function alerting(scope: Construct, c: StackContext, email: string | undefined): void {
  const dependsOn = [c.apis.monitoring!];
  const channel = email
    ? new MonitoringNotificationChannel(scope, 'alert_email', { displayName: 'ABP operators', type: 'email', labels: { email_address: email }, dependsOn })
    : undefined;
  const notificationChannels = channel ? [channel.id] : undefined;
  const subscriptionMetric = (metric: string, subscription: string) =>
    `resource.type = "pubsub_subscription" AND metric.type = "pubsub.googleapis.com/subscription/${metric}" AND resource.labels.subscription_id = "${subscription}"`;

  new MonitoringAlertPolicy(scope, 'alert_dead_letters', {
    displayName: 'ABP: tracking events dead-lettered',
    combiner: 'OR',
    notificationChannels,
    documentation: {
      content: `Events failed every delivery attempt and wait in ${subscriptions.deadLetterInspection}. Pull them, fix the cause, and republish to the tracking topic (docs/deploy.md).`,
      mimeType: 'text/markdown',
    },
    conditions: [
      {
        displayName: 'dead-lettered events waiting',
        conditionThreshold: {
          filter: subscriptionMetric('num_undelivered_messages', subscriptions.deadLetterInspection),
          comparison: 'COMPARISON_GT',
          thresholdValue: 0,
          duration: '300s',
          aggregations: [{ alignmentPeriod: '300s', perSeriesAligner: 'ALIGN_MAX' }],
        },
      },
    ],
    dependsOn,
  });

  new MonitoringAlertPolicy(scope, 'alert_worker_backlog', {
    displayName: 'ABP: a tracking worker is falling behind',
    combiner: 'OR',
    notificationChannels,
    conditions: [subscriptions.stateWriter, subscriptions.analyticsWriter].map((sub) => ({
      displayName: `${sub}: oldest unacknowledged event older than 15 minutes`,
      conditionThreshold: {
        filter: subscriptionMetric('oldest_unacked_message_age', sub),
        comparison: 'COMPARISON_GT',
        thresholdValue: 900,
        duration: '300s',
        aggregations: [{ alignmentPeriod: '60s', perSeriesAligner: 'ALIGN_MAX' }],
      },
    })),
    dependsOn,
  });

  const specs = c.specs;
  const scheduled = functionKeys.filter((k) => specs[k].trigger.kind === 'http' && specs[k].trigger.access === 'scheduler');
  const isPublic = (k: FunctionKey) => specs[k].trigger.kind === 'http' && specs[k].trigger.access === 'public';

  // A failed run logs an ERROR and answers 500 (functions/jobs/register.ts), which Cloud Scheduler retries twice and
  // then drops until the next tick: nothing else would tell anyone that commissions or payouts stopped. The
  // scheduler's own ERROR entries are in the filter too, for runs that never reached the code (a lost invoker grant
  // answers 403, which Cloud Run logs as a warning; an attempt past its deadline).
  new MonitoringAlertPolicy(scope, 'alert_job_errors', {
    displayName: 'ABP: a scheduled job failed',
    combiner: 'OR',
    notificationChannels,
    documentation: {
      content:
        'A scheduled job logged an ERROR. Cloud Scheduler retries a failed run twice, then waits for the next tick. Read the error in Logs Explorer ' +
        `(\`severity>=ERROR ${anyService(scheduled)}\`); every job is safe to run again (Cloud Scheduler → Force run).`,
      mimeType: 'text/markdown',
    },
    conditions: [
      {
        // A log-match condition must be the policy's only one, so one filter covers every job.
        displayName: 'ERROR logged by a scheduled job or its scheduler',
        conditionMatchedLog: {
          filter:
            `severity >= ERROR AND ((resource.type = "cloud_run_revision" AND ${anyService(scheduled)}) OR ` +
            `(resource.type = "cloud_scheduler_job" AND ${anyService(scheduled, 'resource.labels.job_id')}))`,
          // One notification stream per job, so a failing payouts job is not muted by a failing commissions job.
          labelExtractors: { service: 'EXTRACT(resource.labels.service_name)', scheduler_job: 'EXTRACT(resource.labels.job_id)' },
        },
      },
    ],
    // Required for log-match alerts; a job failing every 15 minutes mails once an hour.
    alertStrategy: { notificationRateLimit: { period: '3600s' } },
    dependsOn,
  });

  const serverErrors = (keys: FunctionKey[]) =>
    `resource.type = "cloud_run_revision" AND metric.type = "run.googleapis.com/request_count" AND metric.labels.response_code_class = "5xx" AND ${anyServiceMetric(keys)}`;
  // Summed over revisions and status codes, one series per service, so each service crosses the threshold alone.
  const perService = [{ alignmentPeriod: '300s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_SUM', groupByFields: ['resource.label.service_name'] }];
  const trackingKeys = functionKeys.filter((k) => isPublic(k) && specs[k].tracking);
  const apiKeys = functionKeys.filter((k) => isPublic(k) && !specs[k].tracking);
  new MonitoringAlertPolicy(scope, 'alert_server_errors', {
    displayName: 'ABP: a public function is answering 5xx',
    combiner: 'OR',
    notificationChannels,
    documentation: {
      content:
        'A public function answered server errors (Cloud Run metric run.googleapis.com/request_count, response_code_class 5xx). ' +
        'Its ERROR logs say why; a failed click loses a visit, a failed postback is retried by the advertiser, a failed Stripe webhook by Stripe.',
      mimeType: 'text/markdown',
    },
    conditions: [
      {
        // Low-volume endpoints: a count, since a ratio of a handful of requests would swing on one.
        displayName: `${apiKeys.map(serviceName).join(', ')}: more than 2 server errors in 5 minutes`,
        conditionThreshold: { filter: serverErrors(apiKeys), comparison: 'COMPARISON_GT', thresholdValue: 2, duration: '0s', aggregations: perService },
      },
      {
        // The tracking endpoints serve far more requests: a share of them, which the click volume does not move.
        // Their request logs are not kept (infra/logging.ts), so this metric is how a failing tracking path shows.
        displayName: `${trackingKeys.map(serviceName).join(', ')}: more than 1% server errors over 5 minutes`,
        conditionThreshold: {
          filter: serverErrors(trackingKeys),
          denominatorFilter: `resource.type = "cloud_run_revision" AND metric.type = "run.googleapis.com/request_count" AND ${anyServiceMetric(trackingKeys)}`,
          comparison: 'COMPARISON_GT',
          thresholdValue: 0.01,
          duration: '0s',
          aggregations: perService,
          denominatorAggregations: perService,
        },
      },
    ],
    dependsOn,
  });
}
