import { createHash } from 'node:crypto';

/**
 * A conversion's receipt (`postbackReceipts/{conversionId}`) names, per click, the first intake request that was
 * answered `accepted` with that click. The request published its event before its name was written, so that event
 * is on its way; the state worker books no other request's event for the click (a repeat answered `duplicate`).
 * Per click, not one name for the receipt: the receipt may move to another click and back (re-booking), and a
 * name overwritten on the way back would skip the first request's event, still in flight.
 */
export type NamedRequests = Record<string, string>;

/** The map key for a click id: a hash, since a forged click id may be any text, and Firestore reserves some keys. */
function clickKey(clickId: string): string {
  return createHash('sha256').update(clickId).digest('hex').slice(0, 32);
}

/** The request the receipt names for this click, if any. */
export function namedRequest(named: unknown, clickId: string): string | undefined {
  const v = named && typeof named === 'object' ? (named as NamedRequests)[clickKey(clickId)] : undefined;
  return typeof v === 'string' ? v : undefined;
}

/** The names with this request added for its click, unless the click already has one (the first stays). */
export function withNamed(named: unknown, clickId: string, intakeId: string): NamedRequests {
  const current = named && typeof named === 'object' ? { ...(named as NamedRequests) } : {};
  current[clickKey(clickId)] ??= intakeId;
  return current;
}
