import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local HTTP server that answers as Supabase Auth (GoTrue) does behind the project's API gateway, for the two admin
 * endpoints the user directory uses and the two that token verification may reach (the JWKS, GET /user), so the real
 * supabase-js AuthClient is exercised without reaching supabase.co.
 * Paths live under /auth/v1 as on a Supabase project; point SUPABASE_URL at `url`.
 *
 * Behaviour follows the supabase/auth (GoTrue) source, internal/api/:
 * - api.go: `POST /invite` and `GET /admin/users` both sit behind requireAdminCredentials.
 * - Before GoTrue, the gateway (Kong key-auth) wants an `apikey` header (or query parameter) holding the anon or the
 *   service role key: none gives 401 {"message":"No API key found in request"}, an unknown one 401
 *   {"message":"Invalid API key","hint":…}. These bodies have no error code and no API-version header.
 * - auth.go: no `Authorization: Bearer …` gives 401 no_authorization; a bearer that does not verify gives 403 bad_jwt;
 *   a valid token without an admin role (the anon key) gives 403 not_admin "User not allowed".
 * - invite.go: the email is validated and lower-cased (validateEmail); an existing confirmed user gives 422
 *   email_exists "A user with this email address has already been registered"; an existing unconfirmed user is
 *   invited again and returned; otherwise a user is created. 200 answers carry the user object itself.
 * - admin.go / pagination.go: `page` (default 1) and `per_page` (default 50, no upper bound in this mode), newest
 *   `created_at` first, optional `filter` on the email; the body is {"users":[…],"aud":"authenticated"}, with
 *   `X-Total-Count` and a `Link` header (rel="next" while more pages remain, always rel="last").
 * - errors.go: error bodies depend on the request's X-Supabase-Api-Version header (supabase-js sends 2024-01-01):
 *   from 2024-01-01 on, {"code":"<error_code>","message":"…"} and the header is echoed back; without it (or before
 *   that date), the legacy {"code":<status>,"error_code":"…","msg":"…"}. Either way `x-sb-error-code` is set.
 * Keys here are opaque strings rather than signed JWTs: the stand-in compares them, GoTrue would verify them.
 */

export interface GoTrueIdentity {
  identity_id: string;
  id: string;
  user_id: string;
  identity_data: Record<string, unknown>;
  provider: string;
  last_sign_in_at: string;
  created_at: string;
  updated_at: string;
  email: string;
}

export interface GoTrueUser {
  id: string;
  aud: string;
  role: string;
  email: string;
  phone: string;
  email_confirmed_at?: string;
  confirmed_at?: string;
  invited_at?: string;
  confirmation_sent_at?: string;
  last_sign_in_at?: string;
  app_metadata: Record<string, unknown>;
  user_metadata: Record<string, unknown>;
  identities: GoTrueIdentity[];
  created_at: string;
  updated_at: string;
  is_anonymous: boolean;
}

export interface GoTrueRequest {
  method: string;
  /** Path as the client sent it, including the /auth/v1 prefix, without the query string. */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  body: unknown;
  status: number;
}

export interface GoTrueInvite {
  email: string;
  userId: string;
  data: unknown;
  redirectTo: string | undefined;
}

export interface GoTrueStandIn {
  /** What SUPABASE_URL would be: the project URL, without /auth/v1. */
  url: string;
  serviceRoleKey: string;
  anonKey: string;
  /** Every request that reached the stand-in, in order. */
  requests: GoTrueRequest[];
  /** Invitation emails GoTrue would have sent. */
  invites: GoTrueInvite[];
  /** Accounts by id. */
  users: Map<string, GoTrueUser>;
  /**
   * Adds an account as if it had signed up. `confirmed` (default true) is what makes a later invite answer 422;
   * `createdAt` orders the admin listing (newest first).
   */
  addUser(email: string, opts?: { confirmed?: boolean; createdAt?: Date; id?: string }): GoTrueUser;
  /**
   * Answers the next request to `path` (e.g. '/auth/v1/invite') with this refusal instead, once, after the key
   * checks: a rate limit (429 over_email_send_rate_limit), an outage (503) or a refusal of the address.
   */
  refuseNext(path: string, refusal: { status: number; errorCode: string; message: string }): void;
  close(): Promise<void>;
}

const AUTH_PREFIX = '/auth/v1';
const AUD = 'authenticated';
const API_VERSION_2024_01_01 = '2024-01-01';
const DUPLICATE_EMAIL_MSG = 'A user with this email address has already been registered';
const DEFAULT_PER_PAGE = 50;
// An approximation of checkmail.ValidateFormat (GoTrue's email format check): local part @ hostname.
const EMAIL_FORMAT = /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string,
    message: string,
  ) {
    super(message);
  }
}

/** The gateway's own refusals, which never reach GoTrue and so carry neither an error code nor an API version. */
class GatewayError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, string>,
  ) {
    super(body.message);
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** GoTrue's DetermineClosestAPIVersion: a YYYY-MM-DD date on or after 2024-01-01 selects that version. */
function apiVersion(headers: IncomingHttpHeaders): string | undefined {
  const raw = headers['x-supabase-api-version'];
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (!value || !/^\d{4}-\d{2}-\d{2}$/.test(value)) return undefined;
  const t = Date.parse(`${value}T00:00:00Z`);
  return Number.isFinite(t) && t >= Date.parse(`${API_VERSION_2024_01_01}T00:00:00Z`) ? API_VERSION_2024_01_01 : undefined;
}

function errorReply(err: HttpError, headers: IncomingHttpHeaders): Reply {
  const version = apiVersion(headers);
  const out: Record<string, string> = { 'x-sb-error-code': err.errorCode };
  if (version) {
    out['x-supabase-api-version'] = version;
    return { status: err.status, headers: out, body: { code: err.errorCode, message: err.message } };
  }
  return { status: err.status, headers: out, body: { code: err.status, error_code: err.errorCode, msg: err.message } };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Go's url.Values.Encode: keys sorted, values query-escaped. */
function encodeQuery(query: Record<string, string>): string {
  return Object.keys(query)
    .sort()
    .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(query[k]!)}`)
    .join('&');
}

function parseUint(raw: string, name: string): number {
  if (!/^\d+$/.test(raw)) throw new HttpError(400, 'validation_failed', `Bad Pagination Parameters: strconv.ParseUint: parsing "${raw}": invalid syntax`);
  const n = Number(raw);
  if (name === 'per_page' && n === 0) throw new HttpError(400, 'validation_failed', 'Bad Pagination Parameters: per_page must be greater than 0');
  return n;
}

/**
 * `jwks`, when given, is served at /auth/v1/.well-known/jwks.json as a Supabase project serves it, so the API can
 * verify access tokens against the same SUPABASE_URL it invites through.
 */
export async function startGoTrueStandIn(opts: { serviceRoleKey?: string; anonKey?: string; jwks?: () => unknown } = {}): Promise<GoTrueStandIn> {
  const serviceRoleKey = opts.serviceRoleKey ?? `service-role-${randomUUID()}`;
  const anonKey = opts.anonKey ?? `anon-${randomUUID()}`;
  const requests: GoTrueRequest[] = [];
  const invites: GoTrueInvite[] = [];
  const users = new Map<string, GoTrueUser>();
  const byEmail = (email: string) => [...users.values()].find((u) => u.email === email);
  const refusals = new Map<string, HttpError>();

  function newUser(email: string, at: Date, id: string = randomUUID()): GoTrueUser {
    const iso = at.toISOString();
    return {
      id,
      aud: AUD,
      role: 'authenticated',
      email,
      phone: '',
      app_metadata: { provider: 'email', providers: ['email'] },
      user_metadata: {},
      identities: [
        {
          identity_id: randomUUID(),
          id,
          user_id: id,
          identity_data: { email, email_verified: false, phone_verified: false, sub: id },
          provider: 'email',
          last_sign_in_at: iso,
          created_at: iso,
          updated_at: iso,
          email,
        },
      ],
      created_at: iso,
      updated_at: iso,
      is_anonymous: false,
    };
  }

  function addUser(email: string, o: { confirmed?: boolean; createdAt?: Date; id?: string } = {}): GoTrueUser {
    const normalized = email.toLowerCase();
    if (byEmail(normalized)) throw new Error(`stand-in already has ${normalized}`);
    const at = o.createdAt ?? new Date();
    const user = newUser(normalized, at, o.id);
    if (o.confirmed ?? true) {
      user.email_confirmed_at = at.toISOString();
      user.confirmed_at = at.toISOString();
      user.last_sign_in_at = at.toISOString();
      user.identities[0]!.identity_data.email_verified = true;
    }
    users.set(user.id, user);
    return user;
  }

  /** Answers this request with the refusal queued for its path (refuseNext), once. */
  function takeRefusal(path: string): void {
    const refusal = refusals.get(path);
    refusals.delete(path);
    if (refusal) throw refusal;
  }

  /** Kong key-auth and ACL. */
  function requireApiKey(headers: IncomingHttpHeaders, query: Record<string, string>): void {
    const apikey = (typeof headers.apikey === 'string' ? headers.apikey : undefined) ?? query.apikey;
    if (!apikey) throw new GatewayError(401, { message: 'No API key found in request' });
    if (apikey !== serviceRoleKey && apikey !== anonKey) {
      throw new GatewayError(401, { message: 'Invalid API key', hint: 'Double check your Supabase `anon` or `service_role` API key.' });
    }
  }

  /** The gateway's key check, then GoTrue's requireAdminCredentials. */
  function requireAdmin(headers: IncomingHttpHeaders, query: Record<string, string>): void {
    requireApiKey(headers, query);
    const bearer = /^(?:B|b)earer (\S+)$/.exec(headers.authorization ?? '')?.[1];
    if (!bearer) throw new HttpError(401, 'no_authorization', 'This endpoint requires a Bearer token');
    if (bearer === anonKey) throw new HttpError(403, 'not_admin', 'User not allowed');
    if (bearer !== serviceRoleKey) throw new HttpError(403, 'bad_jwt', 'invalid JWT: unable to parse or verify signature, token is malformed');
  }

  /**
   * GET /user (user.go UserGet behind requireAuthentication), which supabase-js asks about a token it cannot verify
   * itself. The stand-in holds no signing key, so it refuses every token as GoTrue refuses one it cannot verify.
   */
  function currentUser(headers: IncomingHttpHeaders, query: Record<string, string>): Reply {
    requireApiKey(headers, query);
    takeRefusal(`${AUTH_PREFIX}/user`);
    if (!/^(?:B|b)earer (\S+)$/.test(headers.authorization ?? '')) throw new HttpError(401, 'no_authorization', 'This endpoint requires a Bearer token');
    throw new HttpError(403, 'bad_jwt', 'invalid JWT: unable to parse or verify signature, token signature is invalid');
  }

  function invite(body: unknown, query: Record<string, string>): Reply {
    if (!isRecord(body)) throw new HttpError(400, 'bad_json', 'Could not parse request body as JSON');
    const raw = typeof body.email === 'string' ? body.email : '';
    if (!raw) throw new HttpError(400, 'validation_failed', 'An email address is required');
    if (raw.length > 255) throw new HttpError(400, 'validation_failed', 'An email address is too long');
    if (!EMAIL_FORMAT.test(raw)) throw new HttpError(400, 'validation_failed', 'Unable to validate email address: invalid format');
    const email = raw.toLowerCase();
    const now = new Date().toISOString();
    let user = byEmail(email);
    if (user?.email_confirmed_at) throw new HttpError(422, 'email_exists', DUPLICATE_EMAIL_MSG);
    if (!user) {
      user = newUser(email, new Date());
      if (isRecord(body.data)) user.user_metadata = { ...body.data };
      users.set(user.id, user);
    }
    user.invited_at = now;
    user.confirmation_sent_at = now;
    user.updated_at = now;
    invites.push({ email, userId: user.id, data: body.data, redirectTo: query.redirect_to });
    return { status: 200, body: user };
  }

  function listUsers(path: string, query: Record<string, string>): Reply {
    const page = query.page ? parseUint(query.page, 'page') : 1;
    const perPage = query.per_page ? parseUint(query.per_page, 'per_page') : DEFAULT_PER_PAGE;
    const filter = query.filter?.toLowerCase();
    const all = [...users.values()]
      .filter((u) => u.aud === AUD && (!filter || u.email.includes(filter)))
      // created_at desc; GoTrue pages with OFFSET (page-1)*per_page, so page 0 reads like page 1.
      .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : -1));
    const offset = Math.max(page - 1, 0) * perPage;
    const totalPages = Math.ceil(all.length / perPage);
    // The Link URL is the request as GoTrue saw it (behind the gateway, so without /auth/v1), page replaced.
    const base = path.slice(AUTH_PREFIX.length);
    const link = (p: number) => `<${base}?${encodeQuery({ ...query, page: String(p) })}>`;
    let header = '';
    if (totalPages > page) header += `${link(page + 1)}; rel="next", `;
    header += `${link(totalPages)}; rel="last"`;
    return {
      status: 200,
      headers: { link: header, 'x-total-count': String(all.length) },
      body: { users: all.slice(offset, offset + perPage), aud: AUD },
    };
  }

  async function handle(req: IncomingMessage): Promise<{ reply: Reply; path: string; query: Record<string, string>; body: unknown }> {
    const u = new URL(req.url ?? '/', 'http://stand-in');
    const path = u.pathname.replace(/\/+$/, '') || '/';
    const query = Object.fromEntries(u.searchParams);
    const text = await readBody(req);
    let body: unknown = undefined;
    let badJson = false;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        badJson = true;
      }
    }
    try {
      const route = `${req.method} ${path}`;
      if (opts.jwks && route === `GET ${AUTH_PREFIX}/.well-known/jwks.json`) {
        takeRefusal(path);
        return { reply: { status: 200, body: opts.jwks() }, path, query, body };
      }
      if (route === `GET ${AUTH_PREFIX}/user`) return { reply: currentUser(req.headers, query), path, query, body };
      if (route !== `POST ${AUTH_PREFIX}/invite` && route !== `GET ${AUTH_PREFIX}/admin/users`) {
        return { reply: { status: 404, body: { message: `stand-in does not model ${route}` } }, path, query, body };
      }
      requireAdmin(req.headers, query);
      takeRefusal(path);
      if (route === `GET ${AUTH_PREFIX}/admin/users`) return { reply: listUsers(path, query), path, query, body };
      if (badJson) throw new HttpError(400, 'bad_json', 'Could not parse request body as JSON');
      return { reply: invite(body, query), path, query, body };
    } catch (err) {
      if (err instanceof GatewayError) return { reply: { status: err.status, body: err.body }, path, query, body };
      if (err instanceof HttpError) return { reply: errorReply(err, req.headers), path, query, body };
      throw err;
    }
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    handle(req).then(
      ({ reply, path, query, body }) => {
        requests.push({ method: req.method ?? '', path, query, headers: req.headers, body, status: reply.status });
        res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
        res.end(JSON.stringify(reply.body));
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 500, error_code: 'unexpected_failure', msg: `stand-in failure: ${String(err)}` }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    serviceRoleKey,
    anonKey,
    requests,
    invites,
    users,
    addUser,
    refuseNext(path, r) {
      refusals.set(path, new HttpError(r.status, r.errorCode, r.message));
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // fetch keeps connections alive; without this, close() would wait for them to time out.
        server.closeAllConnections();
      });
    },
  };
}
