/**
 * `npm start`: the whole platform locally. Starts the Pub/Sub and Firestore emulators in their own process
 * groups, serves every function on one base URL, and on Ctrl-C stops everything it started.
 */
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { config, type Config } from '../shared/config';
import { recordRunningStack } from '../functions/adapters/dev-identity';
import { portInUse, startEmulators, type RunningEmulator } from './local/emulators';
import { onStopSignals } from './local/signals';
import { startLocalStack, type LocalStack } from './local/stack';

async function main(): Promise<void> {
  process.env.METADATA_SERVER_DETECTION ??= 'none';
  let c: Config;
  try {
    c = config();
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  // PORT=0 would serve on a port the addresses handed out (tracking links, the dev tokens' issuer) do not name.
  if (c.PORT === 0) {
    console.error('PORT=0 is not supported by npm start: choose a port (default 8080).');
    process.exit(2);
  }
  let emulators: RunningEmulator[] = [];
  let stack: LocalStack | undefined;
  const shutdown = async () => {
    // Bounded: with the Pub/Sub emulator gone, deleting the workers' subscriptions would be retried for minutes.
    if (stack) await Promise.race([stack.close().catch(() => undefined), sleep(5000)]);
    await Promise.all(emulators.map((e) => e.stop()));
  };
  // Installed before anything starts, so that a Ctrl-C or a closed terminal during the emulators' start stops them.
  onStopSignals(async () => {
    console.log('\nStopping…');
    await shutdown();
    console.log(emulators.length ? 'Stopped; emulator ports are free.' : 'Stopped.');
  });

  const ports = { PORT: c.PORT, PUBSUB_EMULATOR_PORT: c.PUBSUB_EMULATOR_PORT, FIRESTORE_EMULATOR_PORT: c.FIRESTORE_EMULATOR_PORT };
  // Every port at once, before anything starts: one at a time, after the emulators' half-minute start, sent people
  // round the loop once per busy port.
  const busy = [];
  for (const [name, port] of Object.entries(ports)) if (await portInUse(port)) busy.push(`${port} (${name})`);
  if (busy.length) {
    console.error(`Port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use (another npm start, or an emulator left running?). Stop it, or choose other ports with ${busy.map((b) => b.slice(b.indexOf('(') + 1, -1)).join(', ')}.`);
    process.exit(1);
  }

  try {
    console.log('Starting the Pub/Sub and Firestore emulators…');
    emulators = await startEmulators({
      pubsubPort: ports.PUBSUB_EMULATOR_PORT,
      firestorePort: ports.FIRESTORE_EMULATOR_PORT,
      project: c.GOOGLE_CLOUD_PROJECT,
      logDir: resolve(c.ABP_DATA_DIR, 'logs'),
    });
    stack = await startLocalStack({ runSchedules: true });
  } catch (err) {
    console.error(String((err as Error).message ?? err));
    await shutdown();
    process.exit(1);
  }
  const b = stack.baseUrl;
  // So that `npm run token` signs for this stack's port without being told it.
  if (!c.SUPABASE_URL) recordRunningStack(c.supabaseUrl);
  console.log(`
ABP is running at ${b}
  health        ${b}/healthz
  admin API     ${b}/v1/…   (OpenAPI: ${b}/v1/openapi.json)
  tracking      ${b}/c/{linkId}?sub1=…   ${b}/postback?token=…   ${b}/pixel?token=…
  webhooks      ${b}/webhooks/stripe   (${c.STRIPE_WEBHOOK_SECRET || c.STRIPE_CONNECT_WEBHOOK_SECRET ? 'signature checked with STRIPE_WEBHOOK_SECRET / STRIPE_CONNECT_WEBHOOK_SECRET' : 'answers 503 until STRIPE_WEBHOOK_SECRET or STRIPE_CONNECT_WEBHOOK_SECRET is set'})
  tokens        ${c.SUPABASE_URL ? `Supabase access tokens of ${c.SUPABASE_URL}` : `dev tokens (npm run token) signed with a local key, JWKS at ${b}/auth/v1/.well-known/jwks.json`}
  jobs          commissions every ${c.COMMISSIONS_JOB_MINUTES} min, payouts every ${c.PAYOUTS_JOB_MINUTES} min (POST ${b}/_jobs/commissions or /_jobs/payouts to run now)
  payouts       ${c.STRIPE_SECRET_KEY ? 'Stripe (test mode key)' : 'dry-run provider: transfers are simulated, nothing leaves this machine'}
  emulators     pubsub ${process.env.PUBSUB_EMULATOR_HOST}, firestore ${process.env.FIRESTORE_EMULATOR_HOST}
  data          ${resolve(c.ABP_DATA_DIR)}

Get a token:   TOKEN=$(npm run --silent token -- --email alice@example.com)
Try it:        curl -s -X POST ${b}/v1/orgs -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"name":"Acme","type":"advertiser","plan":"starter"}'
Stop:          Ctrl-C`);
}

void main();
