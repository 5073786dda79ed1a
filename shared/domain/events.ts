import { z } from 'zod';

/**
 * Events on the tracking topic. The click and postback functions publish `click` and `postback`; the state
 * worker, having attributed and priced a postback, publishes `conversion`. Every event carries its own
 * deterministic id: consumers are idempotent on it, since Pub/Sub delivers at least once.
 */
const sub = z.string().max(255).nullable();
export const deviceKinds = ['desktop', 'mobile', 'tablet', 'bot', 'unknown'] as const;

export const clickEvent = z.object({
  type: z.literal('click'),
  eventId: z.string().describe('The click id'),
  orgId: z.string(),
  linkId: z.string(),
  campaignId: z.string(),
  affiliateId: z.string(),
  occurredAt: z.iso.datetime(),
  sub1: sub, sub2: sub, sub3: sub, sub4: sub, sub5: sub,
  /** Keyed hash of the visitor's IP and user agent: repeat-click and fraud checks without storing the IP. */
  visitorHash: z.string(),
  ipHash: z.string(),
  /** /24 for IPv4, /48 for IPv6. */
  ipPrefix: z.string().nullable(),
  country: z.string().length(2).nullable(),
  device: z.enum(deviceKinds),
  os: z.string().nullable(),
  browser: z.string().nullable(),
  referrer: z.string().max(1024).nullable(),
  isBot: z.boolean(),
  botReason: z.string().nullable(),
  /** The campaign's window when clicked: sets the click document's expiry without reading the campaign. */
  attributionWindowDays: z.number().int().min(1).max(365).optional(),
});
export type ClickEvent = z.infer<typeof clickEvent>;

export const postbackEvent = z.object({
  type: z.literal('postback'),
  eventId: z.string().describe('The conversion id: organisation + txn_id, or click id + event'),
  orgId: z.string(),
  clickId: z.string(),
  txnId: z.string().nullable(),
  event: z.string(),
  /** Minor units, or null when the postback had no amount. */
  amount: z.number().int().nullable(),
  currency: z.string().nullable(),
  occurredAt: z.iso.datetime(),
  via: z.enum(['postback', 'pixel']),
  /**
   * The intake request that published it. Repeats of one conversion each publish their own event; the receipt
   * names the request that was answered `accepted`, and the state worker books only that one's (events without
   * it, from before it was kept, are booked as they come).
   */
  intakeId: z.string().optional(),
});
export type PostbackEvent = z.infer<typeof postbackEvent>;

export const conversionStatuses = ['pending', 'approved', 'rejected', 'reversed', 'paid'] as const;

export const conversionEvent = z.object({
  type: z.literal('conversion'),
  eventId: z.string(),
  orgId: z.string(),
  clickId: z.string(),
  linkId: z.string().nullable(),
  campaignId: z.string().nullable(),
  affiliateId: z.string().nullable(),
  txnId: z.string().nullable(),
  event: z.string(),
  amount: z.number().int().nullable(),
  currency: z.string(),
  revenue: z.number().int(),
  payout: z.number().int(),
  status: z.enum(conversionStatuses),
  reasons: z.array(z.string()),
  occurredAt: z.iso.datetime(),
  /**
   * A conversion's analytics rows are versions: booked, then approved, rejected or reversed, each its own event
   * (`eventId`), all under the conversion's id; the report counts the latest by `recordedAt`. Absent on events
   * published before versions existed: the event id and its occurredAt stand in.
   */
  conversionId: z.string().optional(),
  recordedAt: z.iso.datetime().optional(),
});
export type ConversionEvent = z.infer<typeof conversionEvent>;

export const trackingEvent = z.discriminatedUnion('type', [clickEvent, postbackEvent, conversionEvent]);
export type TrackingEvent = z.infer<typeof trackingEvent>;
