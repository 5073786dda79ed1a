import { pubsub } from '../../functions/adapters/pubsub';
import { config } from '../../shared/config';
import { localPaths, maxDeliveryAttempts, subscriptions, topics } from '../../shared/names';
import { defaultRelayInFlight, startPushRelay, type PushRelay } from './push-relay';

/**
 * Creates what production's infra/ creates, on the emulator: the tracking topic, a subscription per worker
 * delivering in the push format Cloud Functions gets (through the relay, see push-relay.ts, or the
 * emulator's own push with LOCAL_DELIVERY=push), and the dead-letter topic with a pull subscription that
 * keeps failed messages for inspection.
 */
export interface PubSubSetup {
  /** Starts the relays when provisioned with `relays: 'later'` (a backlog can be published first); idempotent. */
  startRelays(): void;
  teardown(): Promise<void>;
}

/** The workers, by their subscription's key in shared/names.ts. */
export type RelayWorker = 'stateWriter' | 'analyticsWriter';

/**
 * `relayWorkers`: which workers get a relay in this process (default both). A benchmark that serves a worker
 * from a process of its own runs that worker's relay there (against that process's URL) and leaves it out here;
 * both subscriptions are still created and removed here.
 */
export async function provisionPubSub(
  baseUrl: string,
  opts: { relays?: 'now' | 'later'; relayInFlight?: number; relayWorkers?: readonly RelayWorker[] } = {},
): Promise<PubSubSetup> {
  const ps = pubsub();
  const project = config().GOOGLE_CLOUD_PROJECT;
  const ensureTopic = async (name: string) => {
    const [exists] = await ps.topic(name).exists();
    if (!exists) await ps.createTopic(name);
  };
  await ensureTopic(topics.trackingEvents);
  await ensureTopic(topics.trackingDeadLetter);

  const recreate = async (topic: string, name: string, options: Record<string, unknown>) => {
    const sub = ps.subscription(name);
    // A subscription left by an earlier run may push to a port that is gone: replace it.
    if ((await sub.exists())[0]) await sub.delete();
    await ps.topic(topic).createSubscription(name, options);
  };
  // The framework takes the topic from the push path, as Eventarc would name it.
  const pushPath = (path: string) => `${baseUrl}${path}/projects/${project}/topics/${topics.trackingEvents}`;
  const emulatorPush = config().LOCAL_DELIVERY === 'push';
  // No subscription filters here, unlike production (infra/pubsub.ts leaves `conversion` events out of the state
  // writer's subscription and `postback` events out of the analytics writer's): the emulator (cloud-pubsub-emulator
  // 0.8.20, Cloud SDK 528) accepts and stores a filter but delivers every message anyway, checked with
  // `attributes.type != "conversion"`, `attributes.type = "click"` and `attributes:type`. Nothing differs for the
  // code: each worker ignores the type its production subscription leaves out.
  const workerOptions = (path: string) => ({
    ...(emulatorPush ? { pushConfig: { pushEndpoint: pushPath(path) } } : {}),
    ackDeadlineSeconds: 30,
    deadLetterPolicy: { deadLetterTopic: `projects/${project}/topics/${topics.trackingDeadLetter}`, maxDeliveryAttempts },
    retryPolicy: { minimumBackoff: { seconds: 1 }, maximumBackoff: { seconds: 10 } },
  });
  await recreate(topics.trackingEvents, subscriptions.stateWriter, workerOptions(localPaths.stateWriterPush));
  await recreate(topics.trackingEvents, subscriptions.analyticsWriter, workerOptions(localPaths.analyticsWriterPush));
  const [inspectionExists] = await ps.subscription(subscriptions.deadLetterInspection).exists();
  if (!inspectionExists) await ps.topic(topics.trackingDeadLetter).createSubscription(subscriptions.deadLetterInspection, { messageRetentionDuration: { seconds: 7 * 86400 } });

  let relays: PushRelay[] = [];
  const startRelays = () => {
    if (emulatorPush || relays.length) return;
    const inFlight = opts.relayInFlight ?? defaultRelayInFlight;
    const paths = { stateWriter: localPaths.stateWriterPush, analyticsWriter: localPaths.analyticsWriterPush };
    relays = (opts.relayWorkers ?? ['stateWriter', 'analyticsWriter']).map((w) => startPushRelay(subscriptions[w], pushPath(paths[w]), inFlight));
  };
  if (opts.relays !== 'later') startRelays();

  return {
    startRelays,
    // Subscriptions outlive this process on a shared emulator; remove them so nothing is delivered to a dead port.
    teardown: async () => {
      await Promise.all(relays.map((r) => r.close()));
      for (const name of [subscriptions.stateWriter, subscriptions.analyticsWriter]) await ps.subscription(name).delete().catch(() => undefined);
    },
  };
}
