import { PubSub, type Topic } from '@google-cloud/pubsub';
import { config } from '../../shared/config';
import { topics } from '../../shared/names';
import type { TrackingEvent } from '../../shared/domain/events';

let client: PubSub | undefined;
let topic: Topic | undefined;

export function pubsub(): PubSub {
  client ??= new PubSub({ projectId: config().GOOGLE_CLOUD_PROJECT });
  return client;
}

/**
 * The tracking topic, tuned for the hot path. The client's default batching holds a message up to 10 ms
 * hoping for company; an awaited publish then adds those 10 ms to every redirect. A 1 ms window still lets
 * concurrent hits share one request under load, while a lone click waits about a millisecond.
 */
function trackingTopic(): Topic {
  topic ??= pubsub().topic(topics.trackingEvents, {
    batching: { maxMessages: 100, maxMilliseconds: 1 },
  });
  return topic;
}

/** Resolves once Pub/Sub has acknowledged the event: only then may the caller answer the hit. */
export async function publishTrackingEvent(event: TrackingEvent): Promise<string> {
  return trackingTopic().publishMessage({
    data: Buffer.from(JSON.stringify(event)),
    attributes: { type: event.type, orgId: event.orgId, eventId: event.eventId },
  });
}

export async function closePubSub(): Promise<void> {
  await topic?.flush().catch(() => undefined);
  await client?.close();
  client = undefined;
  topic = undefined;
}
