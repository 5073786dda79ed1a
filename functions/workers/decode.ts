import type { CloudEvent } from '@google-cloud/functions-framework';
import { trackingEvent, type TrackingEvent } from '../../shared/domain/events';

/** The Pub/Sub message inside a CloudEvent, as Eventarc (and the framework, for direct push) delivers it. */
interface MessagePublishedData {
  message?: { data?: string; messageId?: string; attributes?: Record<string, string> };
}

/**
 * Parses the tracking event a message carries. A message that does not parse throws: the delivery fails,
 * Pub/Sub retries it, and after the subscription's maximum attempts it lands in the dead-letter topic
 * where an operator can inspect it. Nothing is silently dropped.
 */
export function decodeTrackingEvent(ce: CloudEvent<unknown>): TrackingEvent {
  const data = ce.data as MessagePublishedData | undefined;
  const base64 = data?.message?.data;
  if (!base64) throw new Error(`message ${ce.id}: no data`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(base64, 'base64').toString('utf8'));
  } catch {
    throw new Error(`message ${ce.id}: data is not JSON`);
  }
  const parsed = trackingEvent.safeParse(json);
  if (!parsed.success) throw new Error(`message ${ce.id}: not a tracking event: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}
