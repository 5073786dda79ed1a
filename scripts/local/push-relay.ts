import { Agent, request } from 'node:http';
import type { Message, Subscription } from '@google-cloud/pubsub';
import { pubsub } from '../../functions/adapters/pubsub';

/**
 * Local delivery to the workers. The Pub/Sub emulator pushes at most two messages at a time per
 * subscription (measured: 2 ÷ handler latency, ~20-50 events/s for the state worker), far below what one
 * production push subscription sustains. So locally each worker subscription is pulled with a streaming pull
 * and every message is POSTed to the worker in exactly the push format Pub/Sub uses; a 2xx acks it, anything
 * else nacks it, and the subscription's dead-letter policy applies as it does to push. The workers cannot
 * tell the difference. LOCAL_DELIVERY=push uses the emulator's own push instead.
 */
export interface PushRelay {
  /**
   * Stops pulling. Deliveries already POSTed run on; with `waitForDeliveries` it resolves only once they have
   * answered (a benchmark that stops a worker's process next would otherwise cut them off mid-write).
   */
  close(opts?: { waitForDeliveries?: boolean }): Promise<void>;
}

/**
 * Deliveries each relay keeps in flight. Production push keeps many more per subscription; the workers group
 * what arrives together into one commit, so a deeper pipeline means larger groups. Measured with the tracking
 * benchmark's drain (15,000 clicks + 1,500 postbacks, nothing else running): 64 drained ~390 events/s, waiting
 * on the emulators; 256 ~500 events/s, limited by the one Node thread of the local stack.
 */
export const defaultRelayInFlight = 256;

/** Longer than any worker's own deadline locally; a delivery that takes longer is nacked and comes again. */
const deliveryTimeoutMs = 60_000;

export function startPushRelay(subscriptionName: string, endpoint: string, maxInFlight = defaultRelayInFlight): PushRelay {
  const sub: Subscription = pubsub().subscription(subscriptionName, {
    flowControl: { maxMessages: maxInFlight, allowExcessMessages: false },
    streamingOptions: { maxStreams: 1 },
  });
  let inFlight = 0;
  let onIdle: (() => void) | undefined;
  const target = new URL(endpoint);
  // node:http with callbacks rather than fetch: the relay runs beside Functions Framework functions, whose
  // per-request `domain` turns on async hooks for the whole process, and fetch's promises and web streams
  // then cost the relay more CPU than the worker it feeds (seen in the tracking benchmark's profile).
  const agent = new Agent({ keepAlive: true, maxSockets: maxInFlight });
  const settled = (m: Message, ok: boolean) => {
    if (ok) m.ack();
    else m.nack();
    if (--inFlight === 0) onIdle?.();
  };
  const deliver = (m: Message) => {
    const body = JSON.stringify({
      subscription: sub.name,
      message: { data: m.data.toString('base64'), messageId: m.id, publishTime: m.publishTime.toISOString(), attributes: m.attributes },
      deliveryAttempt: m.deliveryAttempt,
    });
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      settled(m, ok);
    };
    const req = request(
      { agent, host: target.hostname, port: target.port, path: `${target.pathname}${target.search}`, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume(); // the body is not needed, but must be read for the connection to be reused
        res.on('end', () => finish(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300));
        res.on('error', () => finish(false));
      },
    );
    req.on('error', () => finish(false));
    // A worker that never answers must not hold the delivery (and a waiting close) for ever.
    req.setTimeout(deliveryTimeoutMs, () => req.destroy(new Error('delivery timed out')));
    req.end(body);
  };
  let closing = false;
  sub.on('message', (m: Message) => {
    // Once closing, nothing new is taken (nor acked or nacked here): the subscriber's close releases it.
    if (closing) return;
    inFlight++;
    deliver(m);
  });
  sub.on('error', (err: Error) => console.error(`[push-relay ${subscriptionName}] ${err.message}`));
  return {
    close: async (opts = {}) => {
      closing = true;
      if (!opts.waitForDeliveries) {
        // What is in flight runs on, but its acks come after the subscriber closed and are dropped: those
        // messages are delivered again later, which the workers' idempotency absorbs. Idle keep-alive
        // sockets do not hold the process.
        await sub.close();
        return;
      }
      // Answered deliveries are acked before the subscriber closes, so none of them is delivered again.
      if (inFlight > 0) await new Promise<void>((r) => (onIdle = r));
      await sub.close();
      agent.destroy();
    },
  };
}
