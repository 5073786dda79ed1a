import type { ErrorDetail } from '../../shared/errors';
import type { Reply, RouteDoc } from './router';

/**
 * How a route's successful reply differs from what its OpenAPI document says it answers, one detail per
 * difference (none when it matches): its status, its kind of body (JSON, CSV, none), the JSON body against the
 * response schema as the client receives it (serialised), and fields the schema does not name, since the
 * document declares response objects closed (additionalProperties: false).
 */
export function replyMismatches(route: Pick<RouteDoc, 'status' | 'response'>, reply: Reply): ErrorDetail[] {
  const out: ErrorDetail[] = [];
  const status = reply.status ?? 200;
  if (status !== route.status) out.push({ field: '(status)', message: `${status}, documented ${route.status}` });
  const { json, csv } = route.response;
  const documented = [json && 'a JSON body', csv !== undefined && 'a text/csv body'].filter(Boolean).join(' or ') || 'no body';
  if (reply.body === undefined) {
    if (json || csv !== undefined) out.push({ field: '(body)', message: `none, documented ${documented}` });
    return out;
  }
  // What send() does: a string with a content type goes out as that type, anything else as JSON.
  if (reply.contentType && typeof reply.body === 'string') {
    const type = reply.contentType.split(';')[0]!.trim().toLowerCase();
    if (type !== 'text/csv' || csv === undefined) out.push({ field: '(body)', message: `${type}, documented ${documented}` });
    return out;
  }
  if (!json) {
    out.push({ field: '(body)', message: `JSON, documented ${documented}` });
    return out;
  }
  const wire: unknown = JSON.parse(JSON.stringify(reply.body));
  const parsed = json.safeParse(wire);
  if (!parsed.success) {
    for (const i of parsed.error.issues) out.push({ field: fieldOf(i.path), message: i.message });
    return out;
  }
  undocumentedFields(wire, parsed.data, [], out);
  return out;
}

const fieldOf = (path: readonly PropertyKey[]) => path.map(String).join('.') || '(body)';
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Zod drops the keys an object schema does not name: each one the reply has and the parse lost is undocumented. */
function undocumentedFields(wire: unknown, parsed: unknown, path: string[], out: ErrorDetail[]): void {
  if (Array.isArray(wire) && Array.isArray(parsed)) {
    wire.forEach((w, i) => undocumentedFields(w, parsed[i], [...path, String(i)], out));
    return;
  }
  if (!isObject(wire) || !isObject(parsed)) return;
  for (const [k, v] of Object.entries(wire)) {
    if (!(k in parsed)) out.push({ field: fieldOf([...path, k]), message: 'is not in the documented response' });
    else undocumentedFields(v, parsed[k], [...path, k], out);
  }
}
