/**
 * The servers under test of the tracking benchmark, in a process of their own: the entry point of the child
 * that hit-process.ts starts (never run by hand). In production the hit functions (click, postback, pixel)
 * run on instances of their own, apart from the workers; served from the benchmark's own process they
 * would share its event loop with the bench driver, the workers and their relays, and measure that instead.
 *
 * It serves what the parent asks for (see hit-protocol.ts) on free ports of 127.0.0.1 and answers a few
 * probes that must run where the click function runs. The tracking benchmark starts a second one for the
 * state worker alone (`stateWriter`, with its relay): in production that worker has instances of its own too,
 * and in the bench process it would share one JavaScript thread with the API and the analytics worker. Its environment is the parent's, taken after the
 * parent pointed it at the emulators and the data directory, so the functions here use the same project,
 * emulators and local secrets as the stack. It exits when the parent says close or goes away.
 */
import type { Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import type * as FunctionsFramework from '@google-cloud/functions-framework';
import type { Topic } from '@google-cloud/pubsub';
import { startBareServer } from './bare-server';
import type { FromHitServer, HitServerCalls, HitServerMethod, ProbeMessage, ServeRequest, ServeUrls, ToHitServer } from './hit-protocol';
import type { PushRelay } from '../../local/push-relay';

const closers: (() => Promise<void>)[] = [];

/** The state worker's push endpoint here (set by serve), and its relay while one runs. */
let stateWriterEndpoint: string | undefined;
let stateRelay: PushRelay | undefined;

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  closers.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** A publisher under one batching setting, in both the callback form (as the click function publishes) and the promise form. */
interface ProbePublisher {
  send(done: (err: unknown) => void): void;
  publish(): Promise<string>;
}

async function probeTopic(m: ProbeMessage): Promise<ProbePublisher> {
  const { pubsub, groupedPublisher } = await import('../../../functions/adapters/pubsub');
  const data = Buffer.from(m.data);
  let send: ProbePublisher['send'];
  if (m.batching === 'grouped') {
    const publish = groupedPublisher(pubsub().topic(m.topic));
    send = (done) => publish({ data, attributes: m.attributes }, (r) => done(r.status === 'rejected' ? r.reason : null));
  } else {
    const topic: Topic = pubsub().topic(m.topic, m.batching ? { batching: m.batching } : {});
    send = (done) => topic.publishMessage({ data, attributes: m.attributes }, (err) => done(err));
  }
  return {
    send,
    publish: () => new Promise((resolve, reject) => send((err) => (err ? reject(err as Error) : resolve('')))),
  };
}

async function serve(req: ServeRequest): Promise<ServeUrls> {
  const urls: ServeUrls = {};
  if (req.bareRedirect) {
    const bare = await startBareServer(`Found. Redirecting to ${req.bareRedirect}`, {
      status: 302,
      headers: { location: req.bareRedirect, 'content-type': 'text/plain; charset=utf-8' },
    });
    closers.push(() => bare.close());
    urls.bareRedirect = bare.url;
  }
  const ff: typeof FunctionsFramework = await import('@google-cloud/functions-framework');
  const { getTestServer } = await import('@google-cloud/functions-framework/testing');
  if (req.ffRedirect) {
    const to = req.ffRedirect;
    ff.http('bareRedirect', (_req, res) => res.redirect(302, to));
    urls.ffRedirect = await listen(getTestServer('bareRedirect'));
  }
  if (req.publishRedirect) {
    const { to, message } = req.publishRedirect;
    const topic = await probeTopic(message);
    // The publish in the click function's own form (a callback), so that D - B is the publish as it is paid there.
    ff.http('benchPublishRedirect', (_req, res) => {
      topic.send((err) => {
        if (err) res.status(503).send('publish failed');
        else res.redirect(302, to);
      });
    });
    urls.publishRedirect = await listen(getTestServer('benchPublishRedirect'));
  }
  if (req.hitFunctions) {
    // Registers the three functions with the Functions Framework, as each one's production bundle does.
    await import('../../../functions/tracking/click');
    await import('../../../functions/tracking/postback');
    await import('../../../functions/tracking/pixel');
    const { functionNames, localPaths } = await import('../../../shared/names');
    const { createGateway } = await import('../../local/gateway');
    const routes = (['click', 'postback', 'pixel'] as const).map((k) => ({ prefix: localPaths[k], functionName: functionNames[k] }));
    urls.hitFunctions = await listen(createGateway(routes, { isReady: () => true, serveDevJwks: false }));
  }
  if (req.clickFunction) {
    await import('../../../functions/tracking/click');
    const { functionNames } = await import('../../../shared/names');
    urls.clickFunction = await listen(getTestServer(functionNames.click));
  }
  if (req.stateWriter) {
    // Registers the state worker with the Functions Framework, as its production bundle does.
    await import('../../../functions/workers/state-writer');
    const { functionNames, localPaths, topics } = await import('../../../shared/names');
    const { config } = await import('../../../shared/config');
    const { createGateway } = await import('../../local/gateway');
    // Behind the same prefix as in the stack: the framework takes the topic from the push path (see pubsub-setup.ts).
    const url = await listen(createGateway([{ prefix: localPaths.stateWriterPush, functionName: functionNames.stateWriter }], { isReady: () => true, serveDevJwks: false }));
    stateWriterEndpoint = `${url}${localPaths.stateWriterPush}/projects/${config().GOOGLE_CLOUD_PROJECT}/topics/${topics.trackingEvents}`;
    // Before the servers (closers run in reverse): no delivery should start against a closed server.
    closers.push(() => stopRelay());
    urls.stateWriter = url;
  }
  return urls;
}

async function stopRelay(): Promise<void> {
  const relay = stateRelay;
  stateRelay = undefined;
  // Until what it has in flight is answered, so that no delivery of one part runs into the next, nor into the
  // Firestore client closing at shutdown; at most 10 s, should a write never end.
  await Promise.race([relay?.close({ waitForDeliveries: true }), new Promise((r) => setTimeout(r, 10_000).unref())]);
}

const calls: { [M in HitServerMethod]: (request: HitServerCalls[M]['request']) => Promise<HitServerCalls[M]['result']> } = {
  serve,

  startRelay: async (r) => {
    if (!stateWriterEndpoint) throw new Error('startRelay: serve the state worker first (serve { stateWriter: true })');
    if (stateRelay) return;
    const { startPushRelay } = await import('../../local/push-relay');
    const { subscriptions } = await import('../../../shared/names');
    stateRelay = startPushRelay(subscriptions.stateWriter, stateWriterEndpoint, r.inFlight);
  },

  stopRelay,

  probePublish: async (r) => {
    const topic = await probeTopic(r.message);
    for (let i = 0; i < r.warm; i++) await topic.publish(); // open the channel, warm the client
    const timed = async (into: number[]) => {
      const t = performance.now();
      await topic.publish();
      into.push(performance.now() - t);
    };
    const sequential: number[] = [];
    for (let i = 0; i < r.sequential; i++) await timed(sequential);
    const concurrent: number[] = [];
    const t0 = performance.now();
    const until = t0 + r.seconds * 1000;
    await Promise.all(
      Array.from({ length: r.concurrency }, async () => {
        while (performance.now() < until) await timed(concurrent);
      }),
    );
    return { sequential, concurrent, concurrentSeconds: (performance.now() - t0) / 1000 };
  },

  probeLinkCache: async (r) => {
    const { resolveLink } = await import('../../../functions/services/link-resolver');
    // A hit is a Map lookup and an already settled promise; a miss reads three documents.
    await resolveLink(r.linkId);
    const t = performance.now();
    for (let i = 0; i < r.hits; i++) await resolveLink(r.linkId);
    const hitMicroseconds = ((performance.now() - t) * 1000) / r.hits;
    const missMilliseconds: number[] = [];
    for (const id of r.freshLinkIds) {
      const t1 = performance.now();
      await resolveLink(id);
      missMilliseconds.push(performance.now() - t1);
    }
    return { hitMicroseconds, missMilliseconds };
  },
};

const send = (m: FromHitServer) => {
  if (process.connected) process.send!(m);
};

let closing: Promise<never> | undefined;
function shutdown(code: number): Promise<never> {
  return (closing ??= (async () => {
    // Never hang on a client that does not close: the parent waits for this process to exit.
    setTimeout(() => process.exit(code || 1), 5000).unref();
    for (const close of closers.reverse()) await close().catch(() => undefined);
    const { closePubSub } = await import('../../../functions/adapters/pubsub');
    const { closeFirestore } = await import('../../../functions/adapters/firestore');
    await Promise.all([closePubSub(), closeFirestore()]).catch(() => undefined);
    process.exit(code);
  })());
}

if (!process.send) {
  console.error('scripts/bench/lib/hit-server.ts is started by a benchmark (lib/hit-process.ts), over an IPC channel.');
  process.exit(2);
}
process.on('message', (m: ToHitServer) => {
  if (m.type === 'close') {
    void shutdown(0);
    return;
  }
  const call = calls[m.method] as (request: unknown) => Promise<unknown>;
  call(m.request).then(
    (result) => send({ type: 'reply', id: m.id, result }),
    (err: unknown) => send({ type: 'reply', id: m.id, error: String((err as Error)?.stack ?? err) }),
  );
});
// The parent went away (even killed outright): nothing will close this process, so it closes itself.
process.on('disconnect', () => void shutdown(0));
// Ctrl-C reaches the whole foreground process group, this child included. The parent handles it (its finally
// block closes this process after stopping the load); dying at once would only fail requests in flight.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => void shutdown(0));
send({ type: 'hello' });
