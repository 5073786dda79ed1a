import { createHash } from 'node:crypto';
import type { Request, Response } from '@google-cloud/functions-framework';
import { z } from 'zod';
import type { Permission } from '../../shared/domain/roles';
import { documentIdPattern } from '../../shared/domain/schemas';
import { config } from '../../shared/config';
import { ApiError, badRequest, zodDetails } from '../../shared/errors';
import { illFormedTextAt, illFormedTextMessage } from '../../shared/text';
import { authenticate } from '../services/authentication';
import type { Principal } from '../services/principal';
import { OrgScope, type Idempotency } from '../services/tenancy';
import { replyMismatches } from './reply-check';

/**
 * A small typed router. Each route declares its schemas and the permission it needs; the router validates,
 * authenticates and opens the tenancy scope before the handler runs, so a handler cannot skip any of it.
 * The same declarations generate the OpenAPI document.
 */
export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface Reply {
  status?: number;
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
}

interface BaseCtx<Q, B> {
  req: Request;
  params: Record<string, string>;
  query: Q;
  body: B;
  /** The Idempotency-Key header, when the client sent one: creates with the same key return the first result. */
  idempotency: Idempotency | undefined;
}
export interface PublicCtx<Q, B> extends BaseCtx<Q, B> {
  principal: Principal | undefined;
}
export interface UserCtx<Q, B> extends BaseCtx<Q, B> {
  principal: Principal;
}
export interface OrgCtx<Q, B> extends UserCtx<Q, B> {
  scope: OrgScope;
}

/**
 * What a route answers on success. Every route must say (the route definitions require it), so none can reach
 * the OpenAPI document undescribed: a zod schema for a JSON body; `{ json, csv }` for a route that answers
 * text/csv too (format=csv), csv describing its columns; or 'empty' for an answer without a body.
 */
export type ResponseDef = z.ZodType | { json: z.ZodType; csv: string } | 'empty';

/** A route's success answer as the OpenAPI document and the reply check read it: no json and no csv is no body. */
export interface ResponseDoc {
  json?: z.ZodType;
  csv?: string;
}

export interface RouteDoc {
  method: Method;
  path: string;
  summary: string;
  tag: string;
  /** What the OpenAPI document says the caller needs (x-permission), with who else may (x-permission-note). */
  permission?: Permission;
  permissionNote?: string;
  auth: 'none' | 'required';
  query?: z.ZodType;
  body?: z.ZodType;
  /** A POST may leave the body out (Def.bodyOptional). */
  bodyOptional: boolean;
  response: ResponseDoc;
  status: number;
  /** A retried request with the same Idempotency-Key gets the first one's result (documented in the OpenAPI). */
  idempotent: boolean;
}

export interface Route extends RouteDoc {
  pattern: RegExp;
  paramNames: string[];
  run(req: Request): Promise<Reply>;
}

type Infer<T> = T extends z.ZodType ? z.infer<T> : undefined;

interface Def<Q, B> {
  method: Method;
  path: string;
  summary: string;
  tag: string;
  query?: Q;
  body?: B;
  response: ResponseDef;
  status?: number;
  idempotent?: boolean;
  /**
   * A POST without any body takes the body's defaults. Only where that is harmless: a payout run asked for without
   * a body is refused rather than taken as a real one.
   */
  bodyOptional?: boolean;
}

/** An interface, not an intersection: tsc then says which property a route lacks (its response) instead of misreading its query. */
interface OrgDef<Q, B> extends Def<Q, B> {
  permission: Permission;
  /** A check beyond the permission that needs the caller's scope (an affiliate user acting for itself), run, like it, before the input is validated. */
  authorize?: (scope: OrgScope, params: Record<string, string>) => void;
  /** What `authorize` asks, for the OpenAPI document: the permission it requires, and who else it lets through. */
  authorizeDoc?: { permission: Permission; note: string };
}

function compile(path: string): { pattern: RegExp; paramNames: string[] } {
  const paramNames: string[] = [];
  const source = path.replace(/:([a-zA-Z]+)/g, (_m, n: string) => {
    paramNames.push(n);
    return '([^/]+)';
  });
  return { pattern: new RegExp(`^${source}/?$`), paramNames };
}


function parse<T>(schema: z.ZodType<T> | undefined, value: unknown, where: 'body' | 'query', bodyOptional = false): T {
  if (!schema) return undefined as T;
  // A POST without a body (no Content-Type either) on a route that allows one: its defaults.
  if (where === 'body' && value === undefined && bodyOptional) value = {};
  if (where === 'body' && (value === null || typeof value !== 'object' || Buffer.isBuffer(value) || Array.isArray(value))) {
    throw badRequest('The request body must be a JSON object sent with Content-Type: application/json', [{ field: '(body)', message: 'expected a JSON object' }]);
  }
  const shape = where === 'query' && (schema as unknown) instanceof z.ZodObject ? (schema as unknown as z.ZodObject).shape : undefined;
  if (shape && value && typeof value === 'object') {
    // A filter this route does not have, if ignored, answers as if unfiltered: the whole organisation's numbers
    // passed off as one affiliate's (`affiliate_id` for `affiliateId`).
    const known = Object.keys(shape);
    const unknown = Object.keys(value).filter((k) => !known.includes(k));
    if (unknown.length) {
      throw badRequest('The query string is invalid', unknown.map((k) => ({ field: k, message: `is not a parameter of this route (it takes ${known.join(', ')})` })));
    }
  }
  const illFormed = illFormedTextAt(value);
  if (illFormed) throw badRequest(where === 'body' ? 'The request body is invalid' : 'The query string is invalid', [{ field: illFormed.join('.') || '(body)', message: illFormedTextMessage }]);
  const r = schema.safeParse(value);
  if (!r.success) throw badRequest(where === 'body' ? 'The request body is invalid' : 'The query string is invalid', zodDetails(r.error));
  return r.data;
}

function build<Q, B>(def: Def<Q, B>, auth: 'none' | 'required', permission: Permission | undefined, run: (req: Request, params: Record<string, string>) => Promise<Reply>, permissionNote?: string): Route {
  const { pattern, paramNames } = compile(def.path);
  return {
    method: def.method,
    path: def.path,
    summary: def.summary,
    tag: def.tag,
    auth,
    permission,
    ...(permissionNote ? { permissionNote } : {}),
    query: def.query as z.ZodType | undefined,
    body: def.body as z.ZodType | undefined,
    bodyOptional: def.bodyOptional ?? false,
    response: responseDoc(def.response),
    status: def.status ?? 200,
    idempotent: def.idempotent ?? false,
    pattern,
    paramNames,
    run: (req) => {
      const m = pattern.exec(req.path)!;
      const params = Object.fromEntries(paramNames.map((n, i) => [n, pathParam(n, m[i + 1]!)]));
      return run(req, params);
    },
  };
}

function responseDoc(def: ResponseDef): ResponseDoc {
  if (def === 'empty') return {};
  return def instanceof z.ZodType ? { json: def } : def;
}

/**
 * Every path parameter names a document, and Firestore reads `/` in an id as a path: an id this API could
 * never have issued is simply not found, before anyone looks it up.
 */
function pathParam(name: string, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw badRequest('The path is not valid URL encoding', [{ field: name, message: 'has a malformed % escape' }]);
  }
  if (!documentIdPattern.test(value)) throw new ApiError('not_found', `No ${name} like that exists`, [{ field: name, message: 'is not an id this API issues' }]);
  return value;
}

function base<Q, B>(def: Def<Q, B>, req: Request, params: Record<string, string>): BaseCtx<Infer<Q>, Infer<B>> {
  const query = parse(def.query as z.ZodType | undefined, req.query, 'query') as Infer<Q>;
  const body = parse(def.body as z.ZodType | undefined, req.body, 'body', def.bodyOptional ?? false) as Infer<B>;
  return { req, params, query, body, idempotency: idempotencyOf(req, body) };
}

/** What a client may send as Idempotency-Key: a retry must send exactly the same key, so none is cut short. */
export const idempotencyKeyHeader = z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters').regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');

function idempotencyOf(req: Request, body: unknown): Idempotency | undefined {
  const raw = header(req, 'idempotency-key');
  if (raw === undefined) return undefined;
  const r = idempotencyKeyHeader.safeParse(raw);
  if (!r.success) throw badRequest('The Idempotency-Key header is invalid', r.error.issues.map((i) => ({ field: 'Idempotency-Key', message: i.message })));
  // The validated body: its keys come out in the schema's order, so the same request gives the same fingerprint.
  const fingerprint = createHash('sha256').update(JSON.stringify([req.method, req.path, body ?? null])).digest('base64url');
  return { key: r.data, fingerprint };
}

function header(req: Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A route under /v1/orgs/:orgId that needs a member (or API key) of that organisation with a permission. */
export function orgRoute<Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
  def: OrgDef<Q, B>,
  handler: (ctx: OrgCtx<Infer<Q>, Infer<B>>) => Promise<Reply>,
): Route {
  return build(def, 'required', def.authorizeDoc?.permission ?? def.permission, async (req, params) => {
    const principal = await authenticate(header(req, 'authorization'));
    // Authorise before validating, so a non-member learns nothing, not even which fields are wrong.
    const scope = await OrgScope.open(principal, params.orgId!, def.permission);
    def.authorize?.(scope, params);
    return handler({ ...base(def, req, params), principal, scope });
  }, def.authorizeDoc?.note);
}

/** A route that needs a signed-in caller but no organisation yet. */
export function userRoute<Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
  def: Def<Q, B>,
  handler: (ctx: UserCtx<Infer<Q>, Infer<B>>) => Promise<Reply>,
): Route {
  return build(def, 'required', undefined, async (req, params) => {
    const principal = await authenticate(header(req, 'authorization'));
    return handler({ ...base(def, req, params), principal });
  });
}

export function publicRoute<Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
  def: Def<Q, B>,
  handler: (ctx: PublicCtx<Infer<Q>, Infer<B>>) => Promise<Reply>,
): Route {
  return build(def, 'none', undefined, async (req, params) => handler({ ...base(def, req, params), principal: undefined }));
}

export const ok = (body: unknown): Reply => ({ status: 200, body });
export const created = (body: unknown): Reply => ({ status: 201, body });

export class Router {
  constructor(readonly routes: Route[]) {}

  async dispatch(req: Request): Promise<Reply> {
    const matching = this.routes.filter((r) => r.pattern.test(req.path));
    if (!matching.length) throw new ApiError('not_found', `No route ${req.path.slice(0, 200)}: GET /v1/openapi.json lists every route`);
    const route = matching.find((r) => r.method === req.method || (req.method === 'HEAD' && r.method === 'GET'));
    if (!route) {
      const allowed = [...new Set(matching.map((r) => r.method))].join(', ');
      throw new ApiError('method_not_allowed', `${req.method} is not supported here; use ${allowed}`);
    }
    const reply = await route.run(req);
    if (config().ABP_CHECK_RESPONSES) assertDocumented(route, reply);
    return reply;
  }
}

/**
 * Tests turn this on (ABP_CHECK_RESPONSES): a reply its route's documented response does not describe is a 500
 * naming the route and each difference, so a test that reaches the route fails instead of the document drifting.
 */
function assertDocumented(route: Route, reply: Reply): void {
  const issues = replyMismatches(route, reply);
  if (!issues.length) return;
  const name = `${route.method} ${route.path}`;
  console.error(JSON.stringify({ severity: 'ERROR', message: 'reply does not match its documented response', route: name, issues }));
  throw new ApiError('internal', `${name} answered what its documented response does not describe: ${issues.map((i) => `${i.field} ${i.message}`).join('; ')}`, issues);
}

export function sendError(res: Response, err: unknown): void {
  if (err instanceof ApiError) {
    res.status(err.status).json(err.toBody());
    return;
  }
  console.error(JSON.stringify({ severity: 'ERROR', message: 'unhandled error', error: String((err as Error)?.stack ?? err) }));
  res.status(500).json(new ApiError('internal', 'Something went wrong on our side; the request can be retried').toBody());
}

export function send(res: Response, reply: Reply): void {
  for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
  res.status(reply.status ?? 200);
  if (reply.body === undefined) {
    res.end();
  } else if (reply.contentType && typeof reply.body === 'string') {
    res.type(reply.contentType).send(reply.body);
  } else {
    res.json(reply.body);
  }
}
