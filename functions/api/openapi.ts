import { z } from 'zod';
import { idempotencyKeyHeader, type Route } from './router';
import { errorCodes } from '../../shared/errors';

/** OpenAPI 3.1 generated from the routes' own zod schemas, so the document cannot drift from validation. */
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
    const responses: Record<string, unknown> = {
      [String(r.status)]: r.response ? { description: 'Success', content: { 'application/json': { schema: schema(r.response, 'output') } } } : { description: 'Success' },
    };
    if (r.body || r.query || r.idempotent) responses['400'] = errorRef('Malformed input; details name each field');
    if (r.auth === 'required') responses['401'] = errorRef('Missing or invalid credentials');
    if (r.method !== 'GET') responses['409'] = errorRef('Conflicts with the current state: a plan limit, a status that does not allow it, a reused Idempotency-Key; the message says which');
    if (r.permission) {
      responses['403'] = errorRef('The caller\'s role may not do this');
      responses['404'] = errorRef('Not found, or not in an organisation the caller belongs to');
    }
    paths[oaPath] ??= {};
    paths[oaPath]![r.method.toLowerCase()] = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method.toLowerCase()}${oaPath.replace(/\{?([a-zA-Z0-9]+)\}?/g, (_m, w: string) => w[0]!.toUpperCase() + w.slice(1)).replace(/[^a-zA-Z0-9]/g, '')}`,
      ...(r.permission ? { 'x-permission': r.permission } : {}),
      ...(r.auth === 'required' ? { security: [{ bearer: [] }] } : { security: [] }),
      parameters,
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: schema(r.body, 'input') } } } } : {}),
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
