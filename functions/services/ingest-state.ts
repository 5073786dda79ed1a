import { FieldValue, type DocumentData, type Transaction } from '@google-cloud/firestore';
import { verifyClickId } from '../../shared/domain/click-id';
import { payoutFor, revenueFor } from '../../shared/domain/commission';
import type { ConversionEvent, PostbackEvent } from '../../shared/domain/events';
import type { Affiliate, Campaign } from '../../shared/domain/schemas';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { ledgerEntryId } from './conversion-lifecycle';
import { counterRef } from './counters';
import { OrgScope } from './tenancy';

/**
 * The state worker's conversions: attribution, the conversion document, its pending commission and the live
 * counters, in one transaction that first checks whether the conversion already exists, so a redelivered
 * message changes nothing. (Clicks, the volume, are written in groups: see click-state.ts.)
 */
const day = 86_400_000;
/** A conversion reported this soon after its click is held for review. */
const minClickToConversionMs = 3_000;

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
