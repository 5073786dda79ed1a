import { z } from 'zod';
import { idempotencyKeyHeader, type Route } from './router';
import { errorCodes } from '../../shared/errors';

/** What GET /v1/openapi.json answers, as far as a client relies on it (its parts are JSON Schema and OpenAPI objects). */
export const openApiDocumentResource = z
  .object({
    openapi: z.literal('3.1.0'),
    info: z.object({ title: z.string(), version: z.string(), description: z.string() }),
    servers: z.array(z.object({ url: z.string() })),
    components: z.object({ securitySchemes: z.record(z.string(), z.unknown()), schemas: z.record(z.string(), z.unknown()) }),
    paths: z.record(z.string(), z.record(z.string(), z.unknown())).describe('Path → method → OpenAPI operation'),
  })
  .meta({ id: 'OpenApiDocument' });

/**
 * OpenAPI 3.1 generated from the routes' own zod schemas, so the document cannot drift from validation; in tests
 * the router also holds every reply to its route's response (reply-check.ts), so it cannot drift from the answers.
 */
export function openApiDocument(routes: Route[], serverUrl: string): Record<string, unknown> {
  const components: Record<string, unknown> = {};
  // Named schemas (.meta({ id })) become shared components instead of per-operation $defs.
  const schema = (s: z.ZodType, io: 'input' | 'output') => {
    const json = z.toJSONSchema(s, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
    delete json.$schema;
    const defs = (json.$defs ?? {}) as Record<string, unknown>;
    delete json.$defs;
    const relink = (v: unknown) => JSON.parse(JSON.stringify(v).replaceAll('"#/$defs/', '"#/components/schemas/')) as Record<string, unknown>;
    for (const [id, def] of Object.entries(defs)) components[id] ??= relink(def);
    return relink(json);
  };
  const errorSchema = {
    type: 'object',
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message', 'details'],
        properties: {
          code: { type: 'string', enum: errorCodes },
          message: { type: 'string' },
          details: { type: 'array', items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } } } },
        },
      },
    },
  };
  components.Error = errorSchema;
  const errorRef = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });

  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const oaPath = r.path.replace(/:([a-zA-Z]+)/g, '{$1}');
    const parameters: unknown[] = r.paramNames.map((n) => ({ name: n, in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query instanceof z.ZodObject) {
      for (const [name, field] of Object.entries(r.query.shape as Record<string, z.ZodType>)) {
        parameters.push({ name, in: 'query', required: !field.safeParse(undefined).success, schema: schema(field, 'input') });
      }
    }
    if (r.idempotent) {
      parameters.push({
        name: 'Idempotency-Key', in: 'header', required: false, schema: schema(idempotencyKeyHeader, 'input'),
        description: 'Send one with a create you may retry: a retry by the same caller with the same key and the same request creates nothing more and gets the first result, or a 409 naming it where that cannot be shown again (an API key, whose secret is shown once). The same key with a different request is a 409.',
      });
    }
    const { json, csv } = r.response;
    const content = {
      ...(json ? { 'application/json': { schema: schema(json, 'output') } } : {}),
      ...(csv !== undefined ? { 'text/csv': { schema: { type: 'string', description: csv } } } : {}),
    };
    const responses: Record<string, unknown> = {
      [String(r.status)]: json || csv !== undefined ? { description: json && csv !== undefined ? 'Success: JSON, or CSV with format=csv' : 'Success', content } : { description: 'Success, without a body' },
    };
    if (r.body || r.query || r.idempotent || r.paramNames.length) responses['400'] = errorRef('Malformed input; details name each field');
    if (r.auth === 'required') responses['401'] = errorRef('Missing or invalid credentials');
    if (r.method !== 'GET') responses['409'] = errorRef('Conflicts with the current state: a plan limit, a status that does not allow it, a reused Idempotency-Key; the message says which');
    if (r.permission) {
      responses['403'] = errorRef('The caller\'s role may not do this');
      responses['404'] = errorRef('Not found, or not in an organisation the caller belongs to');
    }
    // Every route can also fail in ways of no one operation: a method the path does not serve, a body the
    // server cannot read, a service we depend on or our own code failing. Each answers the same error body.
    responses.default = errorRef('Any other error: 405 for a method this path does not serve, 400, 413 or 415 for a body that cannot be read, 502 or 503 when a service we depend on (Stripe, Supabase Auth) refuses or is unavailable (the message says whether a retry may help), 500 for a failure of ours');
    paths[oaPath] ??= {};
    paths[oaPath]![r.method.toLowerCase()] = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method.toLowerCase()}${oaPath.replace(/\{?([a-zA-Z0-9]+)\}?/g, (_m, w: string) => w[0]!.toUpperCase() + w.slice(1)).replace(/[^a-zA-Z0-9]/g, '')}`,
      ...(r.permission ? { 'x-permission': r.permission } : {}),
      ...(r.permissionNote ? { 'x-permission-note': r.permissionNote } : {}),
      ...(r.auth === 'required' ? { security: [{ bearer: [] }] } : { security: [] }),
      parameters,
      ...(r.body ? { requestBody: { required: !r.bodyOptional, content: { 'application/json': { schema: schema(r.body, 'input') } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'ABP admin API', version: '1.0.0', description: 'Organisations, members, API keys, campaigns, affiliates, links and tracking data. Money is in integer minor units with an ISO 4217 currency.' },
    servers: [{ url: serverUrl }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'A Supabase access token, or an API key (abp_live_…)' } },
      schemas: components,
    },
    paths,
  };
}
