/** Errors a client may see. Anything else is reported as a 500 without details. */
export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'plan_limit'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'internal'
  /** A service we depend on (Supabase Auth, Stripe) refused in a way only the platform's operators can fix. */
  | 'bad_gateway'
  /** A service we depend on is down or rate limiting us: the same request may succeed later. */
  | 'unavailable';

const statusByCode: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  plan_limit: 409,
  method_not_allowed: 405,
  payload_too_large: 413,
  unsupported_media_type: 415,
  internal: 500,
  bad_gateway: 502,
  unavailable: 503,
};

export const errorCodes = Object.keys(statusByCode) as ErrorCode[];

export interface ErrorDetail {
  field: string;
  message: string;
}

export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetail[] = [],
  ) {
    super(message);
    this.status = statusByCode[code];
  }

  toBody(): { error: { code: ErrorCode; message: string; details: ErrorDetail[] } } {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

/** One detail per zod issue, naming the field (`prefix.path`) it is about. */
export function zodDetails(error: { issues: readonly { code?: string; path: readonly PropertyKey[]; message: string; keys?: readonly string[] }[] }, prefix = ''): ErrorDetail[] {
  const field = (path: readonly PropertyKey[]) => [prefix, ...path.map(String)].filter(Boolean).join('.') || '(body)';
  // An unknown key is named as the field it is, not as the object around it.
  return error.issues.flatMap((i) =>
    i.code === 'unrecognized_keys' && i.keys?.length ? i.keys.map((k) => ({ field: field([...i.path, k]), message: 'is not a field here' })) : [{ field: field(i.path), message: i.message }],
  );
}

export const badRequest = (message: string, details: ErrorDetail[] = []) => new ApiError('bad_request', message, details);
export const unauthorized = (message = 'A valid access token or API key is required') => new ApiError('unauthorized', message);
export const forbidden = (message: string) => new ApiError('forbidden', message);
/** Also used for resources in organisations the caller does not belong to, so their existence is not revealed. */
export const notFound = (what = 'Resource') => new ApiError('not_found', `${what} not found`);
export const conflict = (message: string) => new ApiError('conflict', message);
/** A service we depend on (Supabase Auth, Stripe) refused in a way the client cannot fix: the platform's to fix. */
export const badGateway = (message: string) => new ApiError('bad_gateway', message);
/** A service we depend on is down or rate limiting us: a later retry may succeed. */
export const unavailable = (message: string) => new ApiError('unavailable', message);
