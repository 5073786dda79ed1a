import * as functions from '@google-cloud/functions-framework';
import { config, requireInProduction, supabaseAnonKey } from '../../shared/config';
import { functionNames } from '../../shared/names';
import { openApiDocument, openApiDocumentResource } from './openapi';
import { publicRoute, Router, send, sendError, type Route } from './router';
import { apiRoutes } from './routes';
import { answerFrameworkErrors } from '../framework-errors';

const openApiRoute: Route = publicRoute(
  { method: 'GET', path: '/v1/openapi.json', summary: 'This document', tag: 'Meta', response: openApiDocumentResource },
  async () => ({ status: 200, body: openApiDocument(router.routes, config().publicBaseUrl) }),
);
const router = new Router([...apiRoutes, openApiRoute]);

/** The admin API: one HTTP function serving every /v1 route. */
export async function handleApi(req: functions.Request, res: functions.Response): Promise<void> {
  res.setHeader('Cache-Control', 'no-store');
  try {
    send(res, await router.dispatch(req));
  } catch (err) {
    sendError(res, err);
  }
}

// The API is the one function that verifies tokens: without the anon key it fails its deploy (production
// throws here), not the first sign-in; likewise without what manual payout runs and member invites need.
supabaseAnonKey();
requireInProduction(['STRIPE_SECRET_KEY', 'SUPABASE_SERVICE_ROLE_KEY']);
answerFrameworkErrors();
functions.http(functionNames.api, handleApi);
