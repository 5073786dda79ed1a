import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { devJwks } from '../../functions/adapters/dev-identity';

/**
 * One local base URL for every function. Each function is wrapped by the Functions Framework exactly as it
 * is in production (getTestServer builds the same Express app the framework serves), and this server only
 * routes by path, like the URL map of the production load balancer.
 */
export interface GatewayRoute {
  prefix: string;
  functionName: string;
}

function listenerOf(functionName: string): RequestListener {
  const server = getTestServer(functionName);
  return server.listeners('request')[0] as RequestListener;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

export function createGateway(routes: GatewayRoute[], opts: { isReady: () => boolean; serveDevJwks: boolean }): Server {
  const table = routes.map((r) => ({ prefix: r.prefix, listener: listenerOf(r.functionName) }));
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/healthz') return json(res, opts.isReady() ? 200 : 503, { status: opts.isReady() ? 'ok' : 'starting' });
    if (opts.serveDevJwks && path === '/auth/v1/.well-known/jwks.json') return json(res, 200, devJwks());
    // A prefix matches with or without its trailing slash: /v1 is the API's as /v1/ is.
    const route = table.find((r) => path === r.prefix || path === r.prefix.replace(/\/$/, '') || path.startsWith(r.prefix.endsWith('/') ? r.prefix : `${r.prefix}/`));
    if (!route) return json(res, 404, { error: { code: 'not_found', message: `Nothing is served at ${path}: the admin API is under /v1 (GET /v1/openapi.json lists it), tracking at /c/{linkId}, /postback and /pixel`, details: [] } });
    route.listener(req, res);
  });
}
