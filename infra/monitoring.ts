import { MonitoringAlertPolicy } from '@cdktf/provider-google/lib/monitoring-alert-policy';
import { MonitoringNotificationChannel } from '@cdktf/provider-google/lib/monitoring-notification-channel';
import type { Construct } from 'constructs';
import { subscriptions } from '../shared/names';
import type { StackContext } from './stack';

/**
 * Alert policies for events landing in the dead-letter topic (a worker gave up on them after maxDeliveryAttempts)
 * and for a worker falling behind. Always created, so the conditions are watched whatever the settings: without
 * ABP_ALERT_EMAIL their incidents open in Cloud Monitoring (Alerting → Incidents) and notify nobody; with it they
 * are also e-mailed to that address. (A channel added by hand in the console would be removed by the next apply.)
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
}
