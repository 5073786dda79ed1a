/** Rejections that say the click id was wrong, not the sale: the advertiser may send the sale again with the right one. */
const clickIdReasons = new Set(['invalid_click_id', 'unknown_click', 'foreign_click']);

/** Whether a booked conversion was rejected for its click id, which a later postback naming one of its organisation's clicks re-books. */
export function rejectedForItsClick(doc: { status?: unknown; reasons?: unknown }): boolean {
  return doc.status === 'rejected' && Array.isArray(doc.reasons) && (doc.reasons as unknown[]).some((r) => typeof r === 'string' && clickIdReasons.has(r));
}

/**
 * Whether a postback naming `clickId` books again a conversion already booked under its id. A conversion
 * rejected only because its click id was wrong is re-booked when the postback names another click of the
 * conversion's own organisation (`clickIdIsOurs`, asked last; another organisation's click would only be rejected
 * again, and anyone can mint those, each growing the receipt; two bad ids would only take turns): the conversion id
 * is the transaction's, so otherwise a mistyped or forged click id sent first would keep the real sale from
 * ever being credited. Nothing had been credited or counted for it.
 *
 * Only a rejection made at booking: one a person decided later (`decidedAt`) stands, even if the reason they
 * typed reads like a click-id reason. That conversion was booked and credited once; booking it again would
 * meet its own commission entry and fail on every delivery.
 */
export function rebooks(existing: { status?: unknown; clickId?: unknown; reasons?: unknown; decidedAt?: unknown; approvableAt?: unknown }, clickId: string, clickIdIsOurs: () => boolean): boolean {
  // approvableAt: a conversion rejected at booking never had one; one rejected from pending keeps it (this also
  // tells the two apart in documents written before decidedAt was).
  const rejectedAtBooking = existing.decidedAt === undefined && (existing.approvableAt ?? null) === null;
  return rejectedForItsClick(existing) && rejectedAtBooking && existing.clickId !== clickId && clickIdIsOurs();
}
