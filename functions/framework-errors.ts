import { createRequire } from 'node:module';
import type { Request, Response } from '@google-cloud/functions-framework';
import { ApiError, badRequest, type ErrorCode, type ErrorDetail } from '../shared/errors';

/**
 * The Functions Framework parses every request body (JSON, form, text) before any function runs, and hands a
 * body it cannot parse to Express's default final handler, which answers an HTML "Bad Request" page: a client
 * sending broken JSON would never see our `{"error": …}` body saying what was wrong. The framework has no
 * option for this, so its Express application is given a final handler of ours (`answerFrameworkErrors`,
 * called by each HTTP function's module): 400 for malformed JSON, with the parser's own words; 413 for a
 * body over the limit; 415 for an encoding it does not read; a function that registered an answer of its own
 * (the pixel, which answers its GIF whatever the body) gets its requests back.
 *
 * Express is resolved from the framework's own location, so the change lands on the copy whose application
 * the framework builds (in a deployed bundle, the one the buildpack installs beside it).
 */
type Answer = (req: Request, res: Response, err: unknown) => void;
type Handle = (this: unknown, req: Request, res: Response, done?: (err?: unknown) => void) => void;

/**
 * A function's own answer, for its requests: in production each function has instances of its own, which
 * Cloud Functions names in FUNCTION_TARGET; locally they share one process and are told apart by path.
 */
export interface OwnAnswer {
  functionName: string;
  localPath: string;
  answer: Answer;
}

/**
 * A 4xx raised before the function ran, in our error shape: the body parsers' (body-parser, raw-body: they
 * carry a `type`, e.g. entity.parse.failed for malformed JSON) or the router's (a path it cannot decode,
 * `/c/%E0%A4%A`, is a URIError of status 400). The client's mistake, so answered as one, never as our 500;
 * anything else is not a client error: undefined.
 */
function clientError(err: unknown): ApiError | undefined {
  const e = err as { type?: unknown; status?: unknown; statusCode?: unknown; expose?: unknown; message?: unknown } | null | undefined;
  const status = typeof e?.status === 'number' ? e.status : e?.statusCode;
  if (typeof status !== 'number' || status < 400 || status > 499) return undefined;
  const said = e!.expose === false ? 'The request could not be read' : String(e!.message);
  const code = codeByStatus[status] ?? 'bad_request';
  if (typeof e!.type !== 'string') return new ApiError(code, said);
  const details: ErrorDetail[] = [{ field: '(body)', message: said }];
  if (e!.type === 'entity.parse.failed') {
    // body-parser's strict mode takes only an object or array, and says of `null` or `42` that it is not JSON.
    const json = parsedJson((e as { body?: unknown }).body);
    if (json.valid) return badRequest(`The request body must be a JSON object, not ${json.value === null ? 'null' : typeof json.value}`, [{ field: '(body)', message: 'must be a JSON object' }]);
    return badRequest(`The request body is not valid JSON: ${said}`, details);
  }
  return new ApiError(code, `The request body could not be read: ${said}`, details);
}
function parsedJson(body: unknown): { valid: boolean; value?: unknown } {
  if (typeof body !== 'string') return { valid: false };
  try {
    return { valid: true, value: JSON.parse(body) };
  } catch {
    return { valid: false };
  }
}
const codeByStatus: Partial<Record<number, ErrorCode>> = { 404: 'not_found', 405: 'method_not_allowed', 413: 'payload_too_large', 415: 'unsupported_media_type' };

const answers: OwnAnswer[] = [];
const installed = Symbol.for('abp.frameworkErrors');

function answerUnhandled(req: Request, res: Response, err: unknown): void {
  if (res.headersSent) {
    // Too late for a status: end the exchange, as Express's own final handler does.
    req.socket?.destroy();
    return;
  }
  const path = req.path ?? '/';
  const target = process.env.FUNCTION_TARGET;
  const own = answers.find((a) => a.functionName === target || path === a.localPath || path.startsWith(`${a.localPath}/`));
  if (own) return own.answer(req, res, err);
  let reply = clientError(err);
  if (!reply && err === undefined) reply = new ApiError('not_found', `Nothing is served at ${path}`);
  if (!reply) {
    console.error(JSON.stringify({ severity: 'ERROR', message: 'request failed before the function ran', error: String((err as Error)?.stack ?? err) }));
    reply = new ApiError('internal', 'Something went wrong on our side; the request can be retried');
  }
  res.status(reply.status).setHeader('Cache-Control', 'no-store');
  res.json(reply.toBody());
}

/** Installs the final handler (once per process, however many functions call it), with a function's own answer. */
export function answerFrameworkErrors(own?: OwnAnswer): void {
  if (own) answers.push(own);
  const frameworkRequire = createRequire(require.resolve('@google-cloud/functions-framework'));
  const app = (frameworkRequire('express') as { application: Record<PropertyKey, unknown> & { handle: Handle } }).application;
  if (app[installed]) return;
  const handle = app.handle;
  app.handle = function handleWithJsonErrors(req, res, done) {
    // An application mounted in another one is given its parent's `done`: only the outermost one answers.
    return handle.call(this, req, res, done ?? ((err?: unknown) => answerUnhandled(req, res, err)));
  };
  app[installed] = true;
}
