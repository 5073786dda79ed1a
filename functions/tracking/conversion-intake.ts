import { z } from 'zod';
import { config } from '../../shared/config';
import { verifyClickId } from '../../shared/domain/click-id';
import { namedRequest, withNamed } from '../../shared/domain/receipt';
import { rebooks, rejectedForItsClick } from '../../shared/domain/rebooking';
import type { PostbackEvent } from '../../shared/domain/events';
import { badRequest, unauthorized, zodDetails } from '../../shared/errors';
import { deterministicId, newId } from '../../shared/ids';
import { currencySchema, formatMinor, isMajorAmount, maxSaleMinor, minorUnitDigits, parseMajorAmount } from '../../shared/money';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { publishTrackingEvent } from '../adapters/pubsub';
import { hashSecret } from '../services/authentication';
import { resolveLink, type ResolvedLink } from '../services/link-resolver';
import { OrgScope } from '../services/tenancy';
import { illFormedTextAt, illFormedTextMessage } from '../../shared/text';

/**
 * Shared by the postback and the pixel: authenticate the advertiser, validate, give the conversion its
 * deterministic id, publish, and tell a first delivery from a retry. Attribution happens in the state
 * worker; here only what the answer needs.
 */
export const postbackParams = z.object({
  token: z.string().min(1, 'is required').max(200),
  click_id: z.string({ error: 'is required' }).min(1, 'is required').max(200),
  txn_id: z.string().max(128).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces').optional(),
  amount: z.string().max(32).optional(),
  currency: currencySchema.optional(),
  event: z.string().regex(/^[a-z0-9_.-]{1,64}$/i, 'must be 1-64 letters, digits, _ . -').default('conversion').transform((e) => e.toLowerCase()),
});
export type PostbackParams = z.input<typeof postbackParams>;

export interface IntakeResult {
  conversionId: string;
  status: 'accepted' | 'duplicate';
}

/**
 * Tokens seen lately, and the organisation each belongs to. Bounded, oldest out first: unknown tokens are
 * cached too (each costs a read otherwise), and anyone can send those.
 */
const tokenCache = new Map<string, { at: number; orgId: string | undefined; otherKind: boolean }>();
const maxCachedTokens = 10_000;

/**
 * The organisation a token belongs to, if it is a token of this intake's kind: the pixel's token is public (it
 * is in checkout pages) and must never open the postback; the postback's is secret and belongs on servers.
 * A token issued before pixels had tokens of their own has no kind: it served both, so it still does, or
 * every pixel already in a checkout page would stop recording sales unseen (the pixel always answers its
 * GIF). Rotating the postback token (which such an organisation should do once its pages carry the pixel
 * token: the old one was public) ends it.
 */
async function orgForToken(token: string, via: 'postback' | 'pixel'): Promise<{ orgId: string | undefined; otherKind: boolean }> {
  const ttl = config().LINK_CACHE_TTL_SECONDS * 1000;
  const key = `${via} ${token}`;
  const hit = tokenCache.get(key);
  if (hit && Date.now() - hit.at < ttl) return hit;
  const snap = await firestore().doc(`${collections.postbackTokenIndex}/${hashSecret(token)}`).get();
  const kind = snap.get('kind') as string | undefined;
  const orgId = snap.exists && (kind === via || kind === undefined) ? (snap.get('orgId') as string) : undefined;
  // The other intake's token, sent here by mistake: said so, since the two look alike.
  const found = { at: Date.now(), orgId, otherKind: snap.exists && orgId === undefined };
  if (ttl > 0) {
    tokenCache.delete(key);
    if (tokenCache.size >= maxCachedTokens) tokenCache.delete(tokenCache.keys().next().value!);
    tokenCache.set(key, found);
  }
  return found;
}

/**
 * Query string and body values as single strings: repeated keys keep the first, empty values count as absent.
 * A JSON number is taken as its text, but an id past 2^53 has already lost digits when JSON parsed it
 * (12345678901234567891 reads as 12345678901234567000): two orders would become one conversion, so it is refused.
 */
function flattenParams(raw: Record<string, unknown>, invalid: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    const v = Array.isArray(value) ? value[0] : value;
    if (v === '' || v === undefined || v === null) continue;
    if (typeof v === 'number' && (key === 'txn_id' || key === 'click_id') && !Number.isSafeInteger(v)) {
      throw badRequest(invalid, [{ field: key, message: 'a JSON number this large has lost digits on the way: send the id as a string ("…")' }]);
    }
    // Checked before anything is published: such a click id would be published, then fail every write of it.
    if (illFormedTextAt(v)) throw badRequest(invalid, [{ field: key, message: illFormedTextMessage }]);
    out[key] = typeof v === 'number' ? String(v) : v;
  }
  return out;
}

/** The link behind a click id we minted for one of the organisation's own links; undefined for any other. */
async function orgLinkOf(orgId: string, clickId: string): Promise<ResolvedLink | undefined> {
  const click = verifyClickId(secrets().clickSigningKey, clickId);
  const link = click ? await resolveLink(click.linkId) : undefined;
  return link?.orgId === orgId ? link : undefined;
}

async function campaignCurrency(orgId: string, clickId: string): Promise<string | null> {
  return (await orgLinkOf(orgId, clickId))?.campaign.currency ?? null;
}

/**
 * `clickCookie` (the pixel's): the click id the browser's click cookie holds for the token's organisation, taken
 * when the request names none, or names something that is no click id of ours.
 */
export async function acceptConversion(raw: Record<string, unknown>, via: 'postback' | 'pixel', clickCookie?: (orgId: string) => string | undefined): Promise<IntakeResult> {
  const invalid = via === 'pixel' ? 'The pixel request is invalid' : 'The postback is invalid';
  const flat = flattenParams(raw, invalid);
  if (!flat.token) throw unauthorized(`A valid ${via} token is required (token=…)`);
  const token = postbackParams.shape.token.safeParse(flat.token);
  if (!token.success && typeof flat.token !== 'string') throw badRequest(invalid, zodDetails(token.error, 'token'));
  // The organisation first: the pixel's click cookie is the organisation's own. A string too long to be any token of
  // ours is an unknown token (401), not a malformed request.
  const { orgId, otherKind } = token.success ? await orgForToken(token.data, via) : { orgId: undefined, otherKind: false };
  if (!orgId) {
    const where = 'GET /v1/orgs/{orgId}/postback-config';
    if (via === 'pixel') throw unauthorized(`Unknown pixel token (the pixel takes the pixel token of ${where})`);
    throw unauthorized(otherKind ? `That is the organisation's pixel token: the postback takes its postback token (${where})` : `Unknown postback token (the postback takes the postback token of ${where})`);
  }
  // The pixel's page may send a template's placeholder (`{click_id}`, `undefined`): any value that is no click id of
  // ours gives way to the click cookie, when there is one; the postback, from a server, has none to fall back on.
  if (clickCookie && (flat.click_id === undefined || !(typeof flat.click_id === 'string' && verifyClickId(secrets().clickSigningKey, flat.click_id)))) {
    flat.click_id = clickCookie(orgId) ?? flat.click_id;
    if (flat.click_id === undefined) throw badRequest(invalid, [{ field: 'click_id', message: 'is required: none in the query, and this browser has no click cookie of the organisation (no click on its links within their attribution window, or third-party cookies blocked)' }]);
  }
  const parsed = postbackParams.safeParse(flat);
  if (!parsed.success) throw badRequest(invalid, zodDetails(parsed.error));
  const p = parsed.data;

  let currency = p.currency ?? null;
  let amount: number | null = null;
  if (p.amount !== undefined) {
    // The currency fixes how many decimals the amount may have; without one, the click's campaign gives it.
    currency ??= await campaignCurrency(orgId, p.click_id);
    // No currency sent and no campaign of ours behind the click id (the conversion will be rejected): minor
    // units of an unknown currency would be a guess, so the amount is not kept, and its decimals not judged
    // (a 400 would leave no record of the rejected sale).
    const refuse = (decimals = '') => badRequest(invalid, [{ field: 'amount', message: `must be a decimal amount in the currency's major unit${decimals}, e.g. 49.99` }]);
    if (currency) {
      const minor = parseMajorAmount(p.amount, currency);
      if (minor === undefined) throw refuse(`, with at most ${minorUnitDigits(currency)} decimals for ${currency}`);
      if (minor > maxSaleMinor) throw badRequest(invalid, [{ field: 'amount', message: `is more than one sale can be: at most ${formatMinor(maxSaleMinor, currency)} ${currency}` }]);
      amount = minor;
    } else if (!isMajorAmount(p.amount)) throw refuse();
  }

  const conversionId = p.txn_id ? deterministicId('cnv', orgId, 'txn', p.txn_id) : deterministicId('cnv', orgId, 'click', p.click_id, p.event);
  const intakeId = newId('in');
  const event: PostbackEvent = {
    type: 'postback', eventId: conversionId, orgId, clickId: p.click_id, txnId: p.txn_id ?? null, event: p.event,
    amount, currency, occurredAt: new Date().toISOString(), via, intakeId,
  };
  // Publish before recording the receipt: if we fail in between, the advertiser's retry publishes again
  // (the state worker is idempotent on the id) rather than being told "duplicate" for a lost conversion.
  await publishTrackingEvent(event);
  const scope = OrgScope.system(orgId, via);
  const receipt = scope.collection('postbackReceipts').doc(conversionId);
  try {
    await receipt.create({ at: event.occurredAt, via, clickId: p.click_id, named: withNamed(undefined, p.click_id, intakeId) });
    return { conversionId, status: 'accepted' };
  } catch (err) {
    if ((err as { code?: number }).code !== 6 /* ALREADY_EXISTS */) throw err;
  }
  return { conversionId, status: (await rebooked(scope, conversionId, p.click_id, intakeId)) ? 'accepted' : 'duplicate' };
}

/**
 * Whether a repeat of a conversion (its receipt exists) is accepted. The receipt names, per click, the request whose
 * event books the conversion under it (shared/domain/receipt.ts): the first accepted with it here, or the one whose
 * event the state worker booked first. The worker books no other request's event for that click, so a repeat of a
 * named click is a duplicate, and the named request accepted.
 *
 * A repeat of a sale whose conversion was rejected for its click id, now with a click id of the organisation's
 * own, is booked again by the state worker (shared/domain/rebooking.ts): the advertiser is told it was accepted,
 * not that it changed nothing. Read only on a repeat that names another click than the receipt's. The state worker may
 * have re-booked it already (the event went out first): a conversion now under this click counts too, unless
 * the receipt's click re-books it in turn. The receipt then takes this click, so that the next repeat of it is
 * a duplicate.
 *
 * The conversion may not be booked yet: the first request is still on its way through Pub/Sub (a checkout's
 * pixel, with the visitor's cookie, and the advertiser's postback sent at once). Then this one is accepted if
 * its click id is one of the organisation's own links and the receipt's is not (a forged, unknown or other
 * organisation's click id, whose conversion will be rejected for it): the state worker books this one over it,
 * whichever it handles first. Two of the organisation's own click ids: the first booked stands, as it would.
 */
async function rebooked(scope: OrgScope, conversionId: string, clickId: string, intakeId: string): Promise<boolean> {
  const receiptRef = scope.collection('postbackReceipts').doc(conversionId);
  const conversionRef = scope.collection('conversions').doc(conversionId);
  const isOurs = async (id: string) => (await orgLinkOf(scope.orgId, id)) !== undefined; // links are cached
  // Only a click of this organisation re-books (as the state worker decides). Asked once per click, only where
  // the answer can matter, and kept across the transaction's attempts: a click's link does not change owner.
  const ours = new Map<string, boolean>();
  const oursNow = async (id: string) => ours.get(id) ?? ours.set(id, await isOurs(id)).get(id)!;
  const oursFor = (id: string) => () => ours.get(id) === true;
  return firestore().runTransaction(async (tx) => {
    const receipt = await tx.get(receiptRef);
    const received: unknown = receipt.get('clickId');
    // A click already named stands for its request: this one is that request (the worker booked its event before
    // it got here, or the client retried its create), or a repeat of it.
    const named = namedRequest(receipt.get('named'), clickId);
    if (named !== undefined) return named === intakeId;
    if (received === clickId) return false;
    const conversion = await tx.get(conversionRef);
    let accepted: boolean;
    if (!conversion.exists) {
      accepted = typeof received === 'string' && (await oursNow(clickId)) && !(await oursNow(received));
    } else {
      const doc = conversion.data()!;
      if (rejectedForItsClick(doc)) {
        await oursNow(clickId);
        if (typeof received === 'string') await oursNow(received);
      }
      // Under this click, but rejected for it while the receipt's click books over it (both sent at once, this
      // one's event handled first): that one stands, and keeps the receipt.
      const overruled = typeof received === 'string' && rebooks(doc, received, oursFor(received));
      // Booked under this click by another request's event (a repeat whose event came first): that one stands.
      const bookedByAnother = typeof doc.intakeId === 'string' && doc.intakeId !== intakeId;
      accepted = (doc.clickId === clickId && !overruled && !bookedByAnother) || rebooks(doc, clickId, oursFor(clickId));
    }
    if (accepted) tx.update(receiptRef, { clickId, named: withNamed(receipt.get('named'), clickId, intakeId) });
    return accepted;
  });
}
