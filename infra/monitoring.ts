import { MonitoringAlertPolicy } from '@cdktf/provider-google/lib/monitoring-alert-policy';
import { MonitoringNotificationChannel } from '@cdktf/provider-google/lib/monitoring-notification-channel';
import type { Construct } from 'constructs';
import { subscriptions } from '../shared/names';
import type { StackContext } from './stack';

/**
 * Optional (ABP_ALERT_EMAIL): an e-mail when events land in the dead-letter topic (a worker gave up on them after
 * maxDeliveryAttempts) or when a worker falls behind.
 */
export function alerting(scope: Construct, c: StackContext, email: string): void {
  const dependsOn = [c.apis.monitoring!];
  const channel = new MonitoringNotificationChannel(scope, 'alert_email', { displayName: 'ABP operators', type: 'email', labels: { email_address: email }, dependsOn });
  const subscriptionMetric = (metric: string, subscription: string) =>
    `resource.type = "pubsub_subscription" AND metric.type = "pubsub.googleapis.com/subscription/${metric}" AND resource.labels.subscription_id = "${subscription}"`;

  new MonitoringAlertPolicy(scope, 'alert_dead_letters', {
    displayName: 'ABP: tracking events dead-lettered',
    combiner: 'OR',
    notificationChannels: [channel.id],
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
    notificationChannels: [channel.id],
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
}
