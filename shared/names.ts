/**
 * One source of truth for every name shared by the code and the infrastructure: topics, subscriptions,
 * Firestore collections, analytics tables and function entry points. infra/ imports this module, so a
 * rename cannot leave the deployed resources behind.
 */
export const topics = {
  trackingEvents: 'tracking-events',
  trackingDeadLetter: 'tracking-events-dead-letter',
} as const;

export const subscriptions = {
  stateWriter: 'tracking-events-state-writer',
  analyticsWriter: 'tracking-events-analytics-writer',
  deadLetterInspection: 'tracking-events-dead-letter-inspection',
} as const;

/** Deliveries before Pub/Sub moves a message to the dead-letter topic. */
export const maxDeliveryAttempts = 5;

/**
 * How long dead letters wait for someone to look (Pub/Sub's longest subscription retention). Anything a replayed
 * dead letter relies on to be recognised as already applied (click documents) must be kept at least this long.
 */
export const deadLetterRetentionDays = 31;

export const collections = {
  orgs: 'orgs',
  members: 'members',
  apiKeys: 'apiKeys',
  campaigns: 'campaigns',
  affiliates: 'affiliates',
  links: 'links',
  auditLog: 'auditLog',
  clicks: 'clicks',
  conversions: 'conversions',
  counters: 'counters',
  ledger: 'ledger',
  /** One per accepted postback id: how the postback function tells a retry from a first delivery. */
  postbackReceipts: 'postbackReceipts',
  /** Last non-bot click per visitor and link, for the repeat-click rule. */
  visitors: 'visitors',
  /** Client Idempotency-Key → the id of what that request created. */
  idempotencyKeys: 'idempotencyKeys',
  payouts: 'payouts',
  payoutRuns: 'payoutRuns',
  /** Per campaign, affiliate and month: approved conversions, for volume tiers. */
  tierCounters: 'tierCounters',
  /** Per campaign and UTC day or month: conversions and payout booked, for the campaign's caps. */
  capUsage: 'capUsage',
  /** Leases that keep two payout runs of one organisation from running at once. */
  locks: 'locks',
  /** Stripe webhook event ids already handled (global: events are per platform account). */
  stripeEvents: 'stripeEvents',
  /** Global lookups that serve the hot path and authentication without knowing the org first. */
  linkIndex: 'linkIndex',
  apiKeyIndex: 'apiKeyIndex',
  postbackTokenIndex: 'postbackTokenIndex',
  /** Stripe connected account id → organisation and affiliate, for webhooks. */
  stripeAccountIndex: 'stripeAccountIndex',
  /**
   * Affiliates whose due conversions the commissions job has set aside while they are paused or blocked (global:
   * the job sweeps every organisation; see functions/services/commissions-job.ts).
   */
  heldAffiliates: 'heldAffiliates',
} as const;

export const analyticsTables = {
  events: 'tracking_events',
} as const;

/** Function entry points (the Functions Framework target names). */
export const functionNames = {
  api: 'api',
  click: 'click',
  postback: 'postback',
  pixel: 'pixel',
  stateWriter: 'stateWriter',
  analyticsWriter: 'analyticsWriter',
  /** Scheduled: approves pending conversions whose hold period has ended. */
  commissionsJob: 'commissionsJob',
  /** Scheduled hourly: finishes payouts an earlier run kept for a retry, then runs each organisation's due payout run. */
  payoutsJob: 'payoutsJob',
  stripeWebhook: 'stripeWebhook',
} as const;

/** Paths under which the local gateway serves each function (production gives each its own URL). */
export const localPaths = {
  click: '/c/',
  postback: '/postback',
  pixel: '/pixel',
  api: '/v1/',
  stateWriterPush: '/_push/state-writer',
  analyticsWriterPush: '/_push/analytics-writer',
  stripeWebhook: '/webhooks/stripe',
  commissionsJob: '/_jobs/commissions',
  payoutsJob: '/_jobs/payouts',
} as const;
