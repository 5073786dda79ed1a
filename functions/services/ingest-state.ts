import { FieldValue, Timestamp, type DocumentData, type Transaction } from '@google-cloud/firestore';
import { createHash } from 'node:crypto';
import { verifyClickId } from '../../shared/domain/click-id';
import { payoutFor, revenueFor } from '../../shared/domain/commission';
import type { ClickEvent, ConversionEvent, PostbackEvent } from '../../shared/domain/events';
import type { Affiliate, Campaign } from '../../shared/domain/schemas';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { ledgerEntryId } from './conversion-lifecycle';
import { OrgScope } from './tenancy';

/**
 * The state worker's writes: click and conversion documents, attribution, pending commissions and live
 * counters. Each event is applied in one transaction that first checks whether its document already
 * exists, so a redelivered message changes nothing.
 */
const hour = 3_600_000;
const day = 86_400_000;
/** Click documents outlive the attribution window by this margin before Firestore's TTL removes them. */
const clickRetentionMarginDays = 7;
/** Counters are sharded: one document takes about one sustained write per second. */
const counterShards = 8;
/** A conversion reported this soon after its click is held for review. */
const minClickToConversionMs = 3_000;

function shardOf(id: string): number {
  return createHash('sha1').update(id).digest()[0]! % counterShards;
}

function counterRef(scope: OrgScope, occurredAt: string, campaignId: string, affiliateId: string, eventId: string) {
  const dayKey = occurredAt.slice(0, 10);
  return {
    ref: scope.collection('counters').doc(`${dayKey}_${campaignId}_${affiliateId}_${shardOf(eventId)}`),
    base: { orgId: scope.orgId, day: dayKey, campaignId, affiliateId },
  };
}

export async function applyClick(e: ClickEvent): Promise<{ created: boolean }> {
  const scope = OrgScope.system(e.orgId, 'state-writer');
  const clickRef = scope.collection('clicks').doc(e.eventId);
  const visitorRef = scope.collection('visitors').doc(`${e.linkId}_${e.visitorHash}`);
  const t = Date.parse(e.occurredAt);
  return firestore().runTransaction(async (tx) => {
    const [click, visitor] = await tx.getAll(clickRef, visitorRef);
    if (click!.exists) return { created: false };
    // Events from before the window travelled with the click: read the campaign for those only.
    const windowDays = e.attributionWindowDays ?? ((await tx.get(scope.collection('campaigns').doc(e.campaignId))).get('attributionWindowDays') as number | undefined) ?? 30;
    const last = visitor!.exists ? (visitor!.get('lastClickAt') as number) : undefined;
    // Repeat clicks by the same visitor on the same link within an hour are recorded but not unique.
    const unique = !e.isBot && (last === undefined || t - last >= hour);
    tx.create(clickRef, {
      id: e.eventId, linkId: e.linkId, campaignId: e.campaignId, affiliateId: e.affiliateId, createdAt: e.occurredAt,
      sub1: e.sub1, sub2: e.sub2, sub3: e.sub3, sub4: e.sub4, sub5: e.sub5,
      country: e.country, device: e.device, os: e.os, browser: e.browser, referrer: e.referrer,
      ipPrefix: e.ipPrefix, ipHash: e.ipHash, visitorHash: e.visitorHash, isBot: e.isBot, botReason: e.botReason, unique,
      expireAt: Timestamp.fromMillis(t + (windowDays + clickRetentionMarginDays) * day),
    });
    if (!e.isBot && (last === undefined || t > last)) {
      tx.set(visitorRef, { lastClickAt: t, expireAt: Timestamp.fromMillis(t + day) });
    }
    const c = counterRef(scope, e.occurredAt, e.campaignId, e.affiliateId, e.eventId);
    tx.set(c.ref, {
      ...c.base,
      clicks: FieldValue.increment(e.isBot ? 0 : 1),
      uniqueClicks: FieldValue.increment(unique ? 1 : 0),
      botClicks: FieldValue.increment(e.isBot ? 1 : 0),
    }, { merge: true });
    return { created: true };
  });
}

interface Attribution {
  linkId: string | null;
  campaignId: string | null;
  affiliateId: string | null;
  campaign?: Campaign;
  affiliate?: Affiliate;
  click?: DocumentData;
  reasons: string[];
  fraudReasons: string[];
}

/** Who gets credit for a postback, from the signed click id; the click document is used when it is there. */
async function attribute(tx: Transaction, scope: OrgScope, e: PostbackEvent): Promise<Attribution> {
  const none = (reason: string): Attribution => ({ linkId: null, campaignId: null, affiliateId: null, reasons: [reason], fraudReasons: [] });
  const parts = verifyClickId(secrets().clickSigningKey, e.clickId);
  if (!parts) return none('invalid_click_id');
  const link = await tx.get(firestore().doc(`${collections.linkIndex}/${parts.linkId}`));
  if (!link.exists) return none('unknown_click');
  // A click id minted for another organisation's link: record, never credit, and reveal nothing about it.
  if (link.get('orgId') !== scope.orgId) return none('foreign_click');
  const { campaignId, affiliateId } = link.data() as { campaignId: string; affiliateId: string };
  const [campaign, affiliate, click] = await tx.getAll(
    scope.collection('campaigns').doc(campaignId),
    scope.collection('affiliates').doc(affiliateId),
    scope.collection('clicks').doc(e.clickId),
  );
  const a: Attribution = { linkId: parts.linkId, campaignId, affiliateId, reasons: [], fraudReasons: [] };
  if (!campaign!.exists || !affiliate!.exists) return { ...a, reasons: ['unknown_click'] };
  a.campaign = campaign!.data() as Campaign;
  a.affiliate = affiliate!.data() as Affiliate;
  a.click = click!.exists ? click!.data() : undefined;
  const sinceClick = Date.parse(e.occurredAt) - parts.clickedAt;
  if (sinceClick > a.campaign.attributionWindowDays * day) a.reasons.push('outside_window');
  if (sinceClick < -5 * 60_000) a.reasons.push('before_click');
  if (a.affiliate.status !== 'active') a.reasons.push('affiliate_inactive');
  if (a.campaign.status === 'archived') a.reasons.push('campaign_archived');
  if (e.currency && e.currency !== a.campaign.currency) a.reasons.push('currency_mismatch');
  if (a.click?.isBot) a.fraudReasons.push('bot_click');
  if (sinceClick >= 0 && sinceClick < minClickToConversionMs) a.fraudReasons.push('click_to_conversion_too_fast');
  return a;
}

/**
 * Attributes a postback and books the conversion with its commission as pending. Returns the conversion
 * event for analytics; on redelivery, the already booked conversion (so analytics still gets it once).
 */
export async function applyPostback(e: PostbackEvent): Promise<ConversionEvent> {
  const scope = OrgScope.system(e.orgId, 'state-writer');
  const ref = scope.collection('conversions').doc(e.eventId);
  const doc = await firestore().runTransaction(async (tx) => {
    const existing = await tx.get(ref);
    if (existing.exists) return existing.data()!;
    const a = await attribute(tx, scope, e);
    const rejected = a.reasons.length > 0;
    const currency = a.campaign?.currency ?? e.currency ?? 'USD';
    const override = a.affiliate?.payoutOverrides?.[a.campaignId ?? ''];
    const payout = rejected || !a.campaign ? 0 : payoutFor(override ?? a.campaign.payout, e.amount);
    const revenue = rejected || !a.campaign ? 0 : revenueFor(a.campaign.revenue, e.amount);
    const approvableAt = new Date(Date.parse(e.occurredAt) + (a.campaign?.holdDays ?? 0) * day).toISOString();
    const conversion = {
      id: e.eventId, clickId: e.clickId, linkId: a.linkId, campaignId: a.campaignId, affiliateId: a.affiliateId,
      txnId: e.txnId, event: e.event, amount: e.amount, currency, revenue, payout,
      status: rejected ? 'rejected' : 'pending', reasons: [...a.reasons, ...a.fraudReasons], fraudHold: a.fraudReasons.length > 0,
      via: e.via, createdAt: e.occurredAt, approvableAt: rejected ? null : approvableAt, updatedAt: e.occurredAt,
      // The rule it was booked under: approval prices the volume tier with this rule, not with a later edit.
      payoutRule: rejected ? null : (override ?? a.campaign?.payout ?? null),
    };
    tx.create(ref, conversion);
    if (!rejected && a.campaignId && a.affiliateId) {
      if (payout > 0) {
        const entryId = ledgerEntryId(e.eventId, 'commission');
        tx.create(scope.collection('ledger').doc(entryId), {
          id: entryId, affiliateId: a.affiliateId, conversionId: e.eventId, campaignId: a.campaignId, type: 'commission',
          amount: payout, currency, status: 'pending', approvableAt, createdAt: e.occurredAt,
        });
      }
      const c = counterRef(scope, e.occurredAt, a.campaignId, a.affiliateId, e.eventId);
      tx.set(c.ref, { ...c.base, conversions: FieldValue.increment(1), revenue: { [currency]: FieldValue.increment(revenue) }, payout: { [currency]: FieldValue.increment(payout) } }, { merge: true });
    }
    return conversion;
  });
  return {
    type: 'conversion', eventId: doc.id, orgId: e.orgId, clickId: doc.clickId, linkId: doc.linkId, campaignId: doc.campaignId, affiliateId: doc.affiliateId,
    txnId: doc.txnId, event: doc.event, amount: doc.amount, currency: doc.currency, revenue: doc.revenue, payout: doc.payout,
    status: doc.status, reasons: doc.reasons, occurredAt: doc.createdAt,
  };
}
