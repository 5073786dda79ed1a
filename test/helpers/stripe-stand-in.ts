import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readBody } from './read-body';

/**
 * A local HTTP server that answers as Stripe's v1 API does, for the few endpoints the payout provider uses, so the
 * real stripe-node client (form encoding, retries, error classes) is exercised without reaching api.stripe.com.
 *
 * Behaviour follows Stripe's documentation:
 * - bodies are application/x-www-form-urlencoded with bracket notation (metadata[orgId]=…, expand[0]=…);
 * - every request needs `Authorization: Bearer sk_test_…`, else 401 with Stripe's error shape;
 * - a POST with an Idempotency-Key whose endpoint began executing has its status and body stored: the same key with
 *   the same parameters replays them with `Idempotent-Replayed: true`, with other parameters (or on another
 *   endpoint) it gets 400 idempotency_error. Parameter validation errors and rate limiting (429) happen before
 *   execution and are not stored, so a retry under the same key can still succeed.
 * Response objects are trimmed copies of Stripe's published fixtures (stripe/openapi fixtures3.json), written here so
 * the tests do not depend on files outside the repository.
 */

export type StripeObject = Record<string, unknown>;

export interface StandInRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The decoded form body (query string for GET), nested as Stripe reads it; values stay strings. */
  body: StripeObject;
  status: number;
  /** True when the answer was a stored idempotent response. */
  replayed: boolean;
}

export interface QueuedResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface StripeStandIn {
  host: string;
  port: number;
  url: string;
  requests: StandInRequest[];
  accounts: Map<string, StripeObject>;
  transfers: Map<string, StripeObject>;
  /**
   * Answers the next `times` requests to `path` with `response`. `stored` says whether Stripe would have begun
   * executing (so the answer is kept under the request's idempotency key); by default everything but 401, 409 and
   * 429 is, since those come from layers in front of the idempotency layer.
   */
  failNext(path: string, response: QueuedResponse, times?: number, opts?: { stored?: boolean }): void;
  /**
   * The next request to `path` is executed (and its answer kept under its idempotency key), then the connection
   * is closed before the answer is sent: a connection lost on the way back. Queued in order with failNext.
   */
  dropAnswerNext(path: string): void;
  /** What Stripe does to idempotency keys after 24 hours: the next request under one executes afresh. */
  forgetIdempotencyKeys(): void;
  /** Caps the platform's available balance in one currency; currencies never set are unlimited. */
  setAvailableBalance(currency: string, amount: number): void;
  /**
   * What Stripe does when the affiliate finishes hosted onboarding. `payoutsEnabled: false` models details
   * submitted but still under Stripe's review, the state where the two flags differ.
   */
  completeOnboarding(accountId: string, opts?: { payoutsEnabled?: boolean }): void;
  close(): Promise<void>;
}

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** Whether the endpoint began executing, which decides if Stripe keeps the reply under the idempotency key. */
  executed: boolean;
  /** dropAnswerNext: execute the request, then close the connection instead of answering. */
  dropAnswer?: boolean;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
const randomId = (prefix: string) => `${prefix}_${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x').slice(0, 16)}`;
const isRecord = (v: unknown): v is StripeObject => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------- Stripe objects, shaped as in Stripe's fixtures ----------

const currencyByCountry: Record<string, string> = { US: 'usd', GB: 'gbp', CA: 'cad', AU: 'aud', JP: 'jpy' };

export function accountObject(id: string, params: { email?: string; country?: string; metadata?: Record<string, string>; type?: string }): StripeObject {
  const country = params.country ?? 'US';
  const due = ['business_profile.url', 'external_account', 'individual.first_name', 'individual.last_name', 'tos_acceptance.date', 'tos_acceptance.ip'];
  const requirements = { alternatives: [], current_deadline: null, currently_due: due, disabled_reason: 'requirements.past_due', errors: [], eventually_due: due, past_due: due, pending_verification: [] };
  return {
    id,
    object: 'account',
    business_profile: { mcc: null, name: null, product_description: null, support_email: null, support_phone: null, support_url: null, url: null },
    business_type: null,
    capabilities: { transfers: 'inactive' },
    charges_enabled: false,
    controller: {
      fees: { payer: 'application_express' },
      is_controller: true,
      losses: { payments: 'application' },
      requirement_collection: 'stripe',
      stripe_dashboard: { type: 'express' },
      type: 'application',
    },
    country,
    created: nowSeconds(),
    default_currency: currencyByCountry[country] ?? 'eur',
    details_submitted: false,
    email: params.email ?? null,
    external_accounts: { object: 'list', data: [], has_more: false, url: `/v1/accounts/${id}/external_accounts` },
    future_requirements: { alternatives: [], current_deadline: null, currently_due: [], disabled_reason: null, errors: [], eventually_due: [], past_due: [], pending_verification: [] },
    metadata: params.metadata ?? {},
    payouts_enabled: false,
    requirements,
    settings: { payouts: { debit_negative_balances: true, schedule: { delay_days: 2, interval: 'daily' }, statement_descriptor: null } },
    tos_acceptance: { date: null, ip: null, user_agent: null },
    type: params.type ?? 'express',
  };
}

export function transferObject(id: string, p: { amount: number; currency: string; destination: string; transfer_group?: string; metadata?: Record<string, string>; description?: string }): StripeObject {
  return {
    id,
    object: 'transfer',
    amount: p.amount,
    amount_reversed: 0,
    balance_transaction: randomId('txn'),
    created: nowSeconds(),
    currency: p.currency,
    description: p.description ?? null,
    destination: p.destination,
    destination_payment: randomId('py'),
    livemode: false,
    metadata: p.metadata ?? {},
    reversals: { object: 'list', data: [], has_more: false, url: `/v1/transfers/${id}/reversals` },
    reversed: false,
    source_transaction: null,
    source_type: 'card',
    transfer_group: p.transfer_group ?? null,
  };
}

/** A webhook event as Stripe posts it; `account` is present on events about a connected account. */
export function eventObject(type: string, object: StripeObject, account?: string): StripeObject {
  return {
    id: randomId('evt'),
    object: 'event',
    ...(account ? { account } : {}),
    api_version: '2026-10-28.endive',
    created: nowSeconds(),
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  };
}

/** Stripe's error envelope; doc_url follows Stripe's pattern for coded errors. */
export function stripeError(status: number, e: { type: string; message: string; code?: string; param?: string }, executed = false): Reply {
  const error: StripeObject = { ...e };
  if (e.code) error.doc_url = `https://stripe.com/docs/error-codes/${e.code.replace(/_/g, '-')}`;
  return { status, body: { error }, executed };
}

const missingParam = (param: string) =>
  stripeError(400, { type: 'invalid_request_error', code: 'parameter_missing', param, message: `Missing required param: ${param}.` });

// ---------- form bodies, decoded as Stripe does ----------

/** Turns `a[b][c]=v&list[0]=x` into nested objects and index-keyed arrays; values stay strings. */
export function parseStripeForm(raw: string): StripeObject {
  const root: StripeObject = {};
  for (const [key, value] of new URLSearchParams(raw)) {
    const m = /^([^[\]]+)((?:\[[^\]]*\])*)$/.exec(key);
    const segments = m ? [m[1]!, ...[...m[2]!.matchAll(/\[([^\]]*)\]/g)].map((x) => x[1]!)] : [key];
    let node = root;
    segments.forEach((segment, i) => {
      const seg = segment === '' ? String(Object.keys(node).length) : segment;
      if (seg === '__proto__') return;
      if (i === segments.length - 1) {
        node[seg] = value;
        return;
      }
      const next = node[seg];
      node = isRecord(next) ? next : (node[seg] = {}) as StripeObject;
    });
  }
  return arrayify(root) as StripeObject;
}

function arrayify(v: unknown): unknown {
  if (!isRecord(v)) return v;
  const keys = Object.keys(v);
  const out: StripeObject = {};
  for (const k of keys) out[k] = arrayify(v[k]);
  return keys.length && keys.every((k, i) => k === String(i)) ? keys.map((k) => out[k]) : out;
}

/** Parameter order must not matter when Stripe compares a retried request with the stored one. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isRecord(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}


const stringRecord = (v: unknown): Record<string, string> | undefined =>
  isRecord(v) ? Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string')) : undefined;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

// ---------- the server ----------

export async function startStripeStandIn(opts: { secretKey?: string } = {}): Promise<StripeStandIn> {
  const requests: StandInRequest[] = [];
  const accounts = new Map<string, StripeObject>();
  const transfers = new Map<string, StripeObject>();
  const balances = new Map<string, number>();
  const queued = new Map<string, Array<{ reply: Reply; remaining: number }>>();
  const idempotent = new Map<string, { fingerprint: string; reply: Reply; requestId: string }>();

  function authorize(header: string | undefined): Reply | undefined {
    const key = /^Bearer (\S+)$/.exec(header ?? '')?.[1];
    if (!key) {
      return stripeError(401, {
        type: 'invalid_request_error',
        message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
      });
    }
    const valid = opts.secretKey ? key === opts.secretKey : /^sk_test_\w+$/.test(key);
    if (!valid) return stripeError(401, { type: 'invalid_request_error', message: `Invalid API Key provided: ${key.slice(0, 8)}****${key.slice(-4)}` });
    return undefined;
  }

  function createAccount(body: StripeObject): Reply {
    const id = randomId('acct');
    const account = accountObject(id, { email: str(body.email), country: str(body.country)?.toUpperCase(), metadata: stringRecord(body.metadata), type: str(body.type) });
    accounts.set(id, account);
    return { status: 200, body: account, executed: true };
  }

  function retrieveAccount(id: string): Reply {
    const account = accounts.get(id);
    if (!account) return stripeError(404, { type: 'invalid_request_error', code: 'resource_missing', param: 'account', message: `No such account: '${id}'` });
    return { status: 200, body: account, executed: true };
  }

  function createAccountLink(body: StripeObject): Reply {
    const account = str(body.account);
    if (!account) return missingParam('account');
    const type = str(body.type);
    if (!type) return missingParam('type');
    if (!accounts.has(account)) return stripeError(400, { type: 'invalid_request_error', code: 'resource_missing', param: 'account', message: `No such account: '${account}'` });
    const created = nowSeconds();
    const link = { object: 'account_link', created, expires_at: created + 300, url: `https://connect.stripe.com/setup/e/${account}/${randomBytes(9).toString('base64url')}` };
    return { status: 200, body: link, executed: true };
  }

  function createTransfer(body: StripeObject): Reply {
    const amountText = str(body.amount);
    if (!amountText) return missingParam('amount');
    const currency = str(body.currency)?.toLowerCase();
    if (!currency) return missingParam('currency');
    const destination = str(body.destination);
    if (!destination) return missingParam('destination');
    if (!/^\d+$/.test(amountText) || Number(amountText) < 1) {
      return stripeError(400, { type: 'invalid_request_error', code: 'parameter_invalid_integer', param: 'amount', message: `Invalid integer: ${amountText}` });
    }
    if (!/^[a-z]{3}$/.test(currency)) return stripeError(400, { type: 'invalid_request_error', param: 'currency', message: `Invalid currency: ${currency}` });
    if (!accounts.has(destination)) {
      return stripeError(400, { type: 'invalid_request_error', code: 'resource_missing', param: 'destination', message: `No such destination: '${destination}'` });
    }
    const amount = Number(amountText);
    const available = balances.get(currency);
    if (available !== undefined && available < amount) {
      // Raised while executing, so Stripe stores it under the idempotency key like a success.
      return stripeError(400, { type: 'invalid_request_error', code: 'balance_insufficient', message: 'You have insufficient available funds in your Stripe account.' }, true);
    }
    if (available !== undefined) balances.set(currency, available - amount);
    const id = randomId('tr');
    const transfer = transferObject(id, { amount, currency, destination, transfer_group: str(body.transfer_group), metadata: stringRecord(body.metadata), description: str(body.description) });
    transfers.set(id, transfer);
    return { status: 200, body: transfer, executed: true };
  }

  /** GET /v1/transfers: newest first, filtered by transfer_group and destination, paged by limit and starting_after. */
  function listTransfers(query: StripeObject): Reply {
    const group = str(query.transfer_group);
    const destination = str(query.destination);
    const limit = Math.min(Math.max(Number(str(query.limit) ?? 10), 1), 100);
    let all = [...transfers.values()].reverse().filter((t) => (!group || t.transfer_group === group) && (!destination || t.destination === destination));
    const after = str(query.starting_after);
    if (after) all = all.slice(all.findIndex((t) => t.id === after) + 1);
    return { status: 200, body: { object: 'list', data: all.slice(0, limit), has_more: all.length > limit, url: '/v1/transfers' }, executed: true };
  }

  function route(method: string, path: string, body: StripeObject): Reply {
    if (method === 'POST' && path === '/v1/accounts') return createAccount(body);
    const accountMatch = /^\/v1\/accounts\/([^/]+)$/.exec(path);
    if (method === 'GET' && accountMatch) return retrieveAccount(decodeURIComponent(accountMatch[1]!));
    if (method === 'POST' && path === '/v1/account_links') return createAccountLink(body);
    if (method === 'POST' && path === '/v1/transfers') return createTransfer(body);
    if (method === 'GET' && path === '/v1/transfers') return listTransfers(body);
    return stripeError(404, { type: 'invalid_request_error', message: `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.` });
  }

  function takeQueued(path: string, stored: boolean): Reply | undefined {
    const queue = queued.get(path);
    const head = queue?.[0];
    if (!queue || !head || head.reply.executed !== stored) return undefined;
    if (--head.remaining <= 0) queue.shift();
    return head.reply;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const raw = await readBody(req);
    const body = parseStripeForm(method === 'GET' ? url.search.slice(1) : raw);
    const entry: StandInRequest = { method, path: url.pathname, headers: req.headers, body, status: 0, replayed: false };
    requests.push(entry);
    const requestId = randomId('req');
    const send = (reply: Reply, extra: Record<string, string> = {}) => {
      entry.status = reply.status;
      res.writeHead(reply.status, { 'content-type': 'application/json', 'request-id': requestId, ...reply.headers, ...extra });
      res.end(JSON.stringify(reply.body));
    };

    const unauthorized = authorize(req.headers.authorization);
    if (unauthorized) return send(unauthorized);
    // Limiters sit in front of the idempotency layer: their answers are neither replayed nor stored.
    const early = takeQueued(url.pathname, false);
    if (early) return send(early);

    const keyHeader = req.headers['idempotency-key'];
    const key = method === 'POST' && typeof keyHeader === 'string' ? keyHeader : undefined;
    const fingerprint = `${method} ${url.pathname} ${canonical(body)}`;
    const saved = key ? idempotent.get(key) : undefined;
    if (saved) {
      if (saved.fingerprint !== fingerprint) {
        return send(
          stripeError(400, {
            type: 'idempotency_error',
            message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
          }),
        );
      }
      entry.replayed = true;
      return send(saved.reply, { 'idempotent-replayed': 'true', 'original-request': saved.requestId });
    }

    const queuedReply = takeQueued(url.pathname, true);
    const reply = queuedReply && !queuedReply.dropAnswer ? queuedReply : route(method, url.pathname, body);
    if (key && reply.executed) idempotent.set(key, { fingerprint, reply, requestId });
    if (queuedReply?.dropAnswer) {
      entry.status = reply.status;
      req.socket.destroy();
      return;
    }
    send(reply);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'api_error', message: `stand-in failure: ${String(err)}` } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    host: '127.0.0.1',
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    accounts,
    transfers,
    failNext(path, response, times = 1, failOpts = {}) {
      const stored = failOpts.stored ?? ![401, 409, 429].includes(response.status);
      const list = queued.get(path) ?? [];
      list.push({ reply: { ...response, executed: stored }, remaining: times });
      queued.set(path, list);
    },
    dropAnswerNext(path) {
      const list = queued.get(path) ?? [];
      list.push({ reply: { status: 0, body: null, executed: true, dropAnswer: true }, remaining: 1 });
      queued.set(path, list);
    },
    forgetIdempotencyKeys() {
      idempotent.clear();
    },
    setAvailableBalance(currency, amount) {
      balances.set(currency.toLowerCase(), amount);
    },
    completeOnboarding(accountId, onboardingOpts = {}) {
      const account = accounts.get(accountId);
      if (!account) throw new Error(`stand-in has no account ${accountId}`);
      const enabled = onboardingOpts.payoutsEnabled ?? true;
      const requirements = {
        alternatives: [],
        current_deadline: null,
        currently_due: [],
        disabled_reason: enabled ? null : 'requirements.pending_verification',
        errors: [],
        eventually_due: [],
        past_due: [],
        pending_verification: enabled ? [] : ['individual.id_number'],
      };
      Object.assign(account, { details_submitted: true, payouts_enabled: enabled, capabilities: { transfers: enabled ? 'active' : 'pending' }, requirements });
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // stripe-node keeps connections alive; without this, close() would wait for them to time out.
        server.closeAllConnections();
      });
    },
  };
}
