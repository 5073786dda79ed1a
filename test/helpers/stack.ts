import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort } from '../../scripts/local/emulators';
import type { LocalStack } from '../../scripts/local/stack';

/**
 * Starts the local platform (the same code `npm start` runs) against the emulators that `npm test` started,
 * in a project of its own so that test files never see each other's data.
 */
export interface TestStack {
  baseUrl: string;
  stack: LocalStack;
  token(email: string, opts?: Parameters<typeof import('../../functions/adapters/dev-identity').mintDevToken>[1]): string;
  userId(email: string): string;
  call(method: string, path: string, opts?: { auth?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> }): Promise<Reply>;
  close(): Promise<void>;
}

export interface Reply {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  text: string;
}

export async function startTestStack(env: Record<string, string> = {}): Promise<TestStack> {
  if (!process.env.FIRESTORE_EMULATOR_HOST) throw new Error('Run the tests with `npm test`, which starts the emulators');
  process.env.GOOGLE_CLOUD_PROJECT = `abp-test-${randomBytes(4).toString('hex')}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'abp-test-'));
  process.env.ABP_DATA_DIR = dataDir;
  process.env.PORT = String(await freePort());
  // Every API reply a test provokes is checked against its route's documented response (router.ts): a reply
  // the OpenAPI document does not describe fails the test with a 500 naming the route and the difference.
  process.env.ABP_CHECK_RESPONSES = 'true';
  Object.assign(process.env, env);
  const { startLocalStack } = await import('../../scripts/local/stack');
  const identity = await import('../../functions/adapters/dev-identity');
  const stack = await startLocalStack();
  const call: TestStack['call'] = async (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.auth) headers.authorization = `Bearer ${opts.auth}`;
    let body: string | undefined = opts.rawBody;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const res = await fetch(`${stack.baseUrl}${path}`, { method, headers, body, redirect: 'manual' });
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, headers: res.headers, body: parsed, text };
  };
  return {
    baseUrl: stack.baseUrl,
    stack,
    token: (email, opts) => identity.mintDevToken(email, opts),
    userId: (email) => identity.devUserId(email),
    call,
    // The data directory (DuckDB file, keys) goes with the stack: each test file made one and left it behind.
    close: async () => {
      await stack.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Creates an organisation owned by `email` and returns its id and the owner's token. */
export async function newOrg(s: TestStack, email: string, plan = 'starter'): Promise<{ orgId: string; token: string }> {
  const token = s.token(email);
  const r = await s.call('POST', '/v1/orgs', { auth: token, body: { name: `Org of ${email}`, type: 'advertiser', plan } });
  if (r.status !== 201) throw new Error(`org create failed: ${r.status} ${r.text}`);
  return { orgId: r.body.id, token };
}

export const campaignBody = (over: Record<string, unknown> = {}) => ({
  name: 'Spring sale',
  destinationUrl: 'https://shop.example.com/landing?cid={click_id}&s1={sub1}&aff={affiliate_id}',
  status: 'active',
  currency: 'USD',
  payout: { type: 'cpa', amount: 500 },
  revenue: { type: 'cpa', amount: 800 },
  ...over,
});
