import type { Cloudfunctions2Function } from '@cdktf/provider-google/lib/cloudfunctions2-function';
import { CloudRunV2ServiceIamMember } from '@cdktf/provider-google/lib/cloud-run-v2-service-iam-member';
import { PubsubSubscription } from '@cdktf/provider-google/lib/pubsub-subscription';
import { PubsubSubscriptionIamMember } from '@cdktf/provider-google/lib/pubsub-subscription-iam-member';
import { PubsubTopic } from '@cdktf/provider-google/lib/pubsub-topic';
import { PubsubTopicIamMember } from '@cdktf/provider-google/lib/pubsub-topic-iam-member';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import { ServiceAccountIamMember } from '@cdktf/provider-google/lib/service-account-iam-member';
import type { Construct } from 'constructs';
import { deadLetterRetentionDays, functionNames, maxDeliveryAttempts, subscriptions, topics } from '../shared/names';
import { runServiceOf } from './cloud-functions';
import { functionKeys, kebab, snake, type FunctionKey } from './entries';
import type { StackContext } from './stack';

/**
 * The production twin of scripts/local/pubsub-setup.ts: the tracking topic, one push subscription per worker with
 * retry and dead-letter policies and a filter leaving out the event type that worker ignores, and the dead-letter
 * topic with a pull subscription for inspection.
 */
export interface EventBus {
  trackingTopic: PubsubTopic;
  deadLetterTopic: PubsubTopic;
}

const week = `${7 * 86_400}s`;
/** Pub/Sub's longest subscription retention: dead letters wait this long for someone to look. */
const deadLetterRetention = `${deadLetterRetentionDays * 86_400}s`;

/**
 * Backoff between failed pushes. With maxDeliveryAttempts = 5 the waits are about 60, 120, 240 and 480 s, so an
 * event is dead-lettered only after failing for about 15 minutes: a Firestore or BigQuery outage of a few minutes
 * delays events instead of sending them all to the dead-letter topic (with 10 s it took about 2.5 minutes).
 */
export const retryPolicy = { minimumBackoff: '60s', maximumBackoff: '600s' };

/** The subscription filter that leaves out the one event type a worker ignores. */
export function skipEventType(type: string): string {
  return `attributes.type != "${type}"`;
}

/** The Pub/Sub service agent: it forwards dead letters and mints the push subscriptions' OIDC tokens. */
export function pubsubServiceAgent(c: StackContext): string {
  return `serviceAccount:service-${c.projectNumber}@gcp-sa-pubsub.iam.gserviceaccount.com`;
}

export function eventBus(scope: Construct, c: StackContext): EventBus {
  const dependsOn = [c.apis.pubsub!];
  const trackingTopic = new PubsubTopic(scope, 'tracking_events', { name: topics.trackingEvents, dependsOn });
  const deadLetterTopic = new PubsubTopic(scope, 'tracking_dead_letter', { name: topics.trackingDeadLetter, dependsOn });
  // Dead-lettering publishes as the Pub/Sub service agent, which needs to be allowed to.
  new PubsubTopicIamMember(scope, 'dead_letter_publisher', { topic: deadLetterTopic.id, role: 'roles/pubsub.publisher', member: pubsubServiceAgent(c) });
  return { trackingTopic, deadLetterTopic };
}

export interface WorkerSubscriptions {
  bySubscription: Record<string, PubsubSubscription>;
  deadLetterInspection: PubsubSubscription;
}

/**
 * One push subscription per Pub/Sub-triggered function, pushing raw Pub/Sub envelopes to the function's URL with
 * an OIDC token. The Functions Framework turns such a push into the CloudEvent the worker is registered for and
 * reads the topic from the path `/projects/P/topics/T`, exactly as the local gateway's push path does.
 *
 * Why explicit push subscriptions rather than Eventarc triggers: an Eventarc trigger's subscription is managed by
 * Eventarc and cannot carry our dead-letter policy; here each subscription is ours, with names from shared/names.ts.
 */
export function workerSubscriptions(scope: Construct, c: StackContext, bus: EventBus, functions: Record<FunctionKey, Cloudfunctions2Function>): WorkerSubscriptions {
  const bySubscription: Record<string, PubsubSubscription> = {};
  for (const key of functionKeys) {
    const spec = c.specs[key];
    if (spec.trigger.kind !== 'pubsub') continue;
    const fn = functions[key];
    const id = snake(key);
    // Its own invoker identity: it can invoke this worker and nothing else.
    const pusher = new ServiceAccount(scope, `push_${id}`, {
      accountId: `abp-push-${kebab(functionNames[key])}`,
      displayName: `ABP Pub/Sub push to ${functionNames[key]}`,
      description: `OIDC identity of the ${spec.trigger.subscription} push subscription; may only invoke ${functionNames[key]}.`,
      dependsOn: [c.apis.iam!],
    });
    const invoker = new CloudRunV2ServiceIamMember(scope, `push_${id}_invoker`, {
      name: runServiceOf(fn), location: c.region, role: 'roles/run.invoker', member: `serviceAccount:${pusher.email}`,
    });
    // Needed to mint the OIDC token in projects created before April 2021; harmless in newer ones.
    new ServiceAccountIamMember(scope, `push_${id}_token_creator`, {
      serviceAccountId: pusher.name, role: 'roles/iam.serviceAccountTokenCreator', member: pubsubServiceAgent(c),
    });
    const url = fn.serviceConfig.uri;
    const sub = new PubsubSubscription(scope, `sub_${id}`, {
      name: spec.trigger.subscription,
      topic: bus.trackingTopic.id,
      // How long Pub/Sub waits for the push response: the function's own timeout.
      ackDeadlineSeconds: Math.min(spec.timeoutSeconds, 600),
      messageRetentionDuration: week,
      expirationPolicy: { ttl: '' }, // never expire for inactivity (the default is 31 days)
      retryPolicy,
      // Filters cannot change on an existing subscription: changing one replaces it (docs/deploy.md, "Updating").
      filter: skipEventType(spec.trigger.ignores),
      deadLetterPolicy: { deadLetterTopic: bus.deadLetterTopic.id, maxDeliveryAttempts },
      pushConfig: {
        pushEndpoint: `${url}/projects/${c.project}/topics/${topics.trackingEvents}`,
        oidcToken: { serviceAccountEmail: pusher.email, audience: url },
      },
      dependsOn: [invoker],
    });
    // Dead-lettering acknowledges the message on the source subscription as the service agent. By id, not name, as
    // the grants above: a replaced subscription (a new filter) gets the grant anew instead of losing it.
    new PubsubSubscriptionIamMember(scope, `sub_${id}_dead_letter_subscriber`, { subscription: sub.id, role: 'roles/pubsub.subscriber', member: pubsubServiceAgent(c) });
    bySubscription[spec.trigger.subscription] = sub;
  }
  for (const name of [subscriptions.stateWriter, subscriptions.analyticsWriter]) {
    if (!bySubscription[name]) throw new Error(`No Pub/Sub-triggered function consumes subscription ${name} (see infra/functions.ts)`);
  }
  const deadLetterInspection = new PubsubSubscription(scope, 'sub_dead_letter_inspection', {
    name: subscriptions.deadLetterInspection,
    topic: bus.deadLetterTopic.id,
    ackDeadlineSeconds: 60,
    messageRetentionDuration: deadLetterRetention,
    expirationPolicy: { ttl: '' },
    dependsOn: [c.apis.pubsub!],
  });
  return { bySubscription, deadLetterInspection };
}
