import type { Server } from 'node:http';
import { config } from '../../shared/config';
import { functionNames, localPaths } from '../../shared/names';
import { createGateway, type GatewayRoute } from './gateway';

/**
 * The local platform on top of already running emulators: every function behind one base URL. Used by
 * `npm start` and by the tests, so the tests exercise exactly what a developer runs.
 */
export interface LocalStack {
  baseUrl: string;
  server: Server;
  close(): Promise<void>;
}

export const gatewayRoutes: GatewayRoute[] = [
  { prefix: localPaths.api, functionName: functionNames.api },
  { prefix: localPaths.click, functionName: functionNames.click },
  { prefix: localPaths.postback, functionName: functionNames.postback },
  { prefix: localPaths.pixel, functionName: functionNames.pixel },
  { prefix: localPaths.stateWriterPush, functionName: functionNames.stateWriter },
  { prefix: localPaths.analyticsWriterPush, functionName: functionNames.analyticsWriter },
  { prefix: localPaths.stripeWebhook, functionName: functionNames.stripeWebhook },
  { prefix: localPaths.commissionsJob, functionName: functionNames.commissionsJob },
  { prefix: localPaths.payoutsJob, functionName: functionNames.payoutsJob },
];

/**
 * Cloud Scheduler's part, locally: calls the job functions through the gateway on their cron, so they run
 * through the same HTTP contract as in production.
 */
function scheduleJobs(baseUrl: string): () => void {
  const c = config();
  const every = (path: string, minutes: number) =>
    setInterval(() => {
      fetch(`${baseUrl}${path}`, { method: 'POST' })
        .then(async (r) => console.log(`[scheduler] ${path}: ${r.status} ${await r.text()}`))
        .catch((err: unknown) => console.error(`[scheduler] ${path}: ${String(err)}`));
    }, minutes * 60_000).unref();
  const timers = [every(localPaths.commissionsJob, c.COMMISSIONS_JOB_MINUTES), every(localPaths.payoutsJob, c.PAYOUTS_JOB_MINUTES)];
  return () => timers.forEach(clearInterval);
}

export async function startLocalStack(opts: { runSchedules?: boolean } = {}): Promise<LocalStack> {
  if (!process.env.FIRESTORE_EMULATOR_HOST || !process.env.PUBSUB_EMULATOR_HOST) {
    throw new Error('FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST must point at running emulators');
  }
  process.env.METADATA_SERVER_DETECTION ??= 'none';
  // Express shows stack traces on its own error pages unless NODE_ENV is production, as it is on Cloud Functions.
  process.env.NODE_ENV ??= 'production';
  const c = config();
  // Loaded only now, after the environment points the Google clients at the emulators.
  await import('../../functions');
  let ready = false;
  const server = createGateway(gatewayRoutes, { isReady: () => ready, serveDevJwks: !c.SUPABASE_URL });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(c.PORT, c.HOST, () => resolve());
  });
  const baseUrl = `http://${c.HOST}:${(server.address() as { port: number }).port}`;
  const { provisionPubSub } = await import('./pubsub-setup');
  let pubsubSetup: Awaited<ReturnType<typeof provisionPubSub>>;
  try {
    pubsubSetup = await provisionPubSub(baseUrl);
  } catch (err) {
    // A listening server left behind would keep the process (a test file's, say) alive until its timeout.
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    throw err;
  }
  const stopSchedules = opts.runSchedules ? scheduleJobs(baseUrl) : () => undefined;
  ready = true;
  return {
    baseUrl,
    server,
    close: async () => {
      ready = false;
      stopSchedules();
      await pubsubSetup.teardown();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      const { closeFirestore } = await import('../../functions/adapters/firestore');
      const { closePubSub } = await import('../../functions/adapters/pubsub');
      const { closeAnalyticsStore } = await import('../../functions/adapters/analytics');
      await Promise.all([closeFirestore(), closePubSub(), closeAnalyticsStore()]);
    },
  };
}
