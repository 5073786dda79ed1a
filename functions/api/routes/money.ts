import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { affiliateResource, balanceResource, documentId, httpUrl, listQuery } from '../../../shared/domain/schemas';
import { config } from '../../../shared/config';
import { ledgerStatuses, payoutStatuses } from '../../../shared/domain/ledger';
import { can } from '../../../shared/domain/roles';
import { badGateway, badRequest, conflict, forbidden, notFound, unavailable } from '../../../shared/errors';
import { deterministicId } from '../../../shared/ids';
import { formatMinor } from '../../../shared/money';
import { collections } from '../../../shared/names';
import { PayoutProviderError, payoutProvider } from '../../adapters/payouts';
import { affiliateBalances } from '../../services/balances';
import { applyAccountState } from '../../services/stripe-accounts';
import { transitionConversion } from '../../services/conversion-lifecycle';
import { belowMinimumListed, payoutsListed, storedRun, runPayouts, toPayout } from '../../services/payout-runs';
import { actorOf } from '../../services/principal';
import { globalIndexDoc } from '../../services/tenancy';
import { created, ok, orgRoute } from '../router';
import { toAffiliate } from './affiliates';
import { conversionResource, toConversion } from './tracking';

const ledgerEntryResource = z
  .object({
    id: z.string(), affiliateId: z.string(), conversionId: z.string().nullable().describe('Null for a transfer_reversal (money Stripe took back from a paid transfer: a credit returned to the balance, and its negative twin on the reversed payout)'), campaignId: z.string().nullable(), type: z.enum(['commission', 'tier_adjustment', 'clawback', 'transfer_reversal']),
    amount: z.number().describe('Minor units; negative for clawbacks, downward tier adjustments and a transfer_reversal\'s paid twin'), currency: z.string(), status: z.enum(ledgerStatuses), payoutId: z.string().nullable(), reason: z.string().nullable(), createdAt: z.string(),
  })
  .meta({ id: 'LedgerEntry' });
const toEntry = (e: DocumentData) => ({ id: e.id, affiliateId: e.affiliateId, conversionId: e.conversionId ?? null, campaignId: e.campaignId ?? null, type: e.type, amount: e.amount, currency: e.currency, status: e.status, payoutId: e.payoutId ?? null, reason: e.reason ?? null, createdAt: e.createdAt });

const payoutResource = z
  .object({ id: z.string(), affiliateId: z.string(), amount: z.number(), currency: z.string(), status: z.enum(payoutStatuses), reason: z.string().nullable(), transferId: z.string().nullable(), simulated: z.boolean() })
  .meta({ id: 'Payout' });
const payoutRunFields = {
  id: z.string(),
  trigger: z.enum(['manual', 'schedule']),
  createdAt: z.string(),
  completedAt: z.string().nullable(),
};
const belowMinimumResource = z
  .object({ affiliateId: z.string(), currency: z.string(), amount: z.number().describe('Minor units: the approved balance left for a later run'), minimum: z.number().describe("The affiliate's minimum payout in this currency, minor units") })
  .meta({ id: 'BelowMinimum' });
const payoutRunResource = z
  .object({
    ...payoutRunFields,
    status: z.enum(['running', 'completed', 'dry_run']).describe('running: in progress, or stopped before it completed; dry_run: only what would be paid, nothing recorded'),
    payouts: z.array(payoutResource).describe(`The run's payouts, blocked ones included: the first ${payoutsListed} by payout id, sorted by affiliate id (GET …/payouts?runId= lists every one)`),
    payoutCount: z.number().int().describe('How many payouts the run made in all'),
    belowMinimum: z.array(belowMinimumResource).describe(`Approved balances the run did not pay because they are under the affiliate's minimum payout (PATCH the affiliate's minimumPayout to change it), the first ${belowMinimumListed} by affiliate id; a running run lists none yet, nor do runs completed before 2026-11-24`),
    belowMinimumCount: z.number().int().describe('How many balances were held back in all'),
  })
  .meta({ id: 'PayoutRun' });
/** A run as the list shows it: without its payouts (GET …/payout-runs/{id} has them). Dry runs are not recorded. */
const payoutRunSummaryResource = z
  .object({ ...payoutRunFields, status: z.enum(['running', 'completed']).describe('running: in progress, or stopped before it completed') })
  .meta({ id: 'PayoutRunSummary' });
const statementResource = z.object({ payout: payoutResource, entries: z.array(ledgerEntryResource).describe('Oldest first') }).meta({ id: 'PayoutStatement' });
const statementCsv = 'With format=csv: a header line, then one line per ledger entry, oldest first: entryId,conversionId,campaignId,type,amount,currency,createdAt; amount is a decimal in the major unit (49.99), conversionId and campaignId are empty for a transfer_reversal; lines end with CRLF';
const onboardingResource = z
  .object({
    url: z.string().describe("Stripe's onboarding page for the affiliate's Express account: send the affiliate there"),
    expiresAt: z.string().describe('When the link stops working (a few minutes); ask for a new one after that'),
    affiliate: affiliateResource,
  })
  .meta({ id: 'StripeOnboarding' });

/**
 * The payouts provider's refusals as HTTP answers: its reason says whose move it is, retryable whether waiting helps.
 * `callerFields` names the request fields the caller sent, by the provider's name for the parameter they became: a
 * refusal of one of those is the caller's to fix (400 naming it), not the platform's.
 */
async function fromProvider<T>(call: Promise<T>, callerFields: Record<string, string> = {}): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (!(err instanceof PayoutProviderError)) throw err;
    if (err.retryable) throw unavailable(`Stripe is unavailable or busy (${err.reason}); retry in a moment`);
    if (err.reason === 'account_invalid') throw conflict(`Stripe refused the affiliate's connected account: ${err.message}`);
    const field = err.param === undefined ? undefined : callerFields[err.param];
    if (field) throw badRequest(`Stripe refused ${field}: ${err.message}`, [{ field, message: `Stripe refused it: ${err.message}` }]);
    console.error(JSON.stringify({ severity: 'ERROR', message: 'payouts provider refused onboarding', reason: err.reason, error: err.message }));
    throw badGateway(`Stripe refused the onboarding request (${err.reason}); the platform's Stripe settings need attention`);
  }
}

export const moneyRoutes = [
  orgRoute(
    {
      method: 'PATCH', path: '/v1/orgs/:orgId/conversions/:id', summary: 'Approve, reject or reverse a conversion (pending → approved | rejected; approved or paid → reversed)', tag: 'Money', permission: 'conversions:write',
      body: z.object({ status: z.enum(['approved', 'rejected', 'reversed']), reason: z.string().trim().min(1).max(200).optional() }).strict().meta({ id: 'ConversionTransition' }),
      response: conversionResource,
    },
    async ({ scope, params, body }) => ok(toConversion(await transitionConversion(scope, params.id!, body))),
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/affiliates/:id/balance', summary: "An affiliate's balance per currency: pending, approved, paid and available", tag: 'Money', permission: 'payouts:read', response: balanceResource },
    async ({ scope, params }) => {
      await scope.getOrThrow('affiliates', params.id!, 'Affiliate');
      return ok({ affiliateId: params.id, balances: await affiliateBalances(scope, params.id!) });
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/affiliates/:id/ledger', summary: "An affiliate's ledger entries", tag: 'Money', permission: 'payouts:read', query: listQuery, response: z.object({ items: z.array(ledgerEntryResource), nextCursor: z.string().nullable() }) },
    async ({ scope, params, query }) => {
      await scope.getOrThrow('affiliates', params.id!, 'Affiliate');
      const p = await scope.list<DocumentData>('ledger', { ...query, equals: { affiliateId: params.id }, newestFirstBy: 'createdAt' });
      return ok({ items: p.items.map(toEntry), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    {
      method: 'POST', path: '/v1/orgs/:orgId/payout-runs', tag: 'Money', permission: 'payouts:write', body: z.object({ dryRun: z.boolean().default(false) }).strict(), response: payoutRunResource, status: 201, idempotent: true,
      summary: 'Pay every affiliate who is due (dryRun: only show what would be paid). A retry with the same Idempotency-Key returns the same run, finishing it if it stopped halfway (409 while it is still running, or if it lost its lease to another run part-way: the holder or the next run finishes what it left); a dry run creates nothing and ignores the key',
    },
    async ({ scope, body, principal, idempotency }) => {
      // The run id is derived from the key, scoped like createOnce's records (organisation, caller, key), so another
      // caller's same key is another run. A retry lands on the same run: runPayouts returns it once completed, refuses
      // it while the first attempt holds the lease, and otherwise finishes it, its payouts keeping their ids.
      const actor = actorOf(principal);
      // Its body is only dryRun, and dry runs ignore the key: no other request can come with the same key.
      const runId = idempotency && !body.dryRun ? deterministicId('run', scope.orgId, `${actor.type}:${actor.id}`, idempotency.key) : undefined;
      return created(await runPayouts(scope, { dryRun: body.dryRun, trigger: 'manual', runId }));
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/payout-runs', summary: 'Payout runs, newest first', tag: 'Money', permission: 'payouts:read', query: listQuery, response: z.object({ items: z.array(payoutRunSummaryResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('payoutRuns', { ...query, newestFirstBy: 'createdAt' });
      return ok({ items: p.items.map((r) => ({ id: r.id, trigger: r.trigger, createdAt: r.createdAt, completedAt: r.completedAt, status: r.status })), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/payout-runs/:id', summary: 'A payout run with its first 100 payouts and their count', tag: 'Money', permission: 'payouts:read', response: payoutRunResource },
    async ({ scope, params }) => {
      return ok(await storedRun(scope, await scope.getOrThrow<DocumentData>('payoutRuns', params.id!, 'Payout run')));
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/payouts', summary: 'Payouts (an affiliate user sees its own)', tag: 'Money', permission: 'payouts:read', query: listQuery.extend({ affiliateId: documentId.optional(), status: z.enum(['claiming', 'claimed', 'releasing', 'paid', 'failed', 'blocked', 'cancelled', 'reversed']).optional(), runId: documentId.optional().describe('The payouts of one payout run') }), response: z.object({ items: z.array(payoutResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('payouts', { ...query, equals: { affiliateId: query.affiliateId, status: query.status, runId: query.runId }, newestFirstBy: 'createdAt' });
      return ok({ items: p.items.map(toPayout), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/payouts/:id/statement', summary: 'The ledger entries and conversions a payout covers', tag: 'Money', permission: 'payouts:read', query: z.object({ format: z.enum(['json', 'csv']).default('json') }), response: { json: statementResource, csv: statementCsv } },
    async ({ scope, params, query }) => {
      const payout = await scope.getOrThrow<DocumentData>('payouts', params.id!, 'Payout');
      const entries = (await scope.collection('ledger').where('payoutId', '==', params.id).get()).docs.map((d) => toEntry(d.data())).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      if (query.format === 'csv') {
        const lines = ['entryId,conversionId,campaignId,type,amount,currency,createdAt', ...entries.map((e) => [e.id, e.conversionId, e.campaignId ?? '', e.type, formatMinor(e.amount, e.currency), e.currency, e.createdAt].join(','))];
        return { status: 200, contentType: 'text/csv; charset=utf-8', body: `${lines.join('\r\n')}\r\n`, headers: { 'Content-Disposition': `attachment; filename="statement-${params.id}.csv"` } };
      }
      return ok({ payout: toPayout(payout), entries });
    },
  ),
  orgRoute(
    {
      method: 'POST', path: '/v1/orgs/:orgId/affiliates/:id/stripe/onboarding', summary: "Create the affiliate's Stripe Express account if needed and return an onboarding link", tag: 'Money', permission: 'affiliates:read', response: onboardingResource,
      body: z.object({
        returnUrl: httpUrl.optional().describe('Where Stripe sends the affiliate back once onboarding is done: a page of your app, which may ask this route again to see payoutsEnabled. Default: this affiliate in the API, which a browser cannot read without a token'),
        refreshUrl: httpUrl.optional().describe('Where Stripe sends the affiliate when the link has expired or was used: a page of your app that asks this route for a new link. Default: as returnUrl'),
      }).strict(),
      bodyOptional: true,
      // The affiliate onboards itself; otherwise only those who may edit affiliates.
      authorize: (scope, params) => {
        if (scope.role === 'affiliate') scope.assertActsFor(params.id!);
        else if (!can(scope.role, 'affiliates:write')) throw forbidden(`The ${scope.role} role may not change affiliates`);
      },
      authorizeDoc: { permission: 'affiliates:write', note: 'Or an affiliate user acting for this affiliate (onboarding itself)' },
    },
    async ({ scope, params, body }) => {
      const affiliate = await scope.get<DocumentData>('affiliates', params.id!);
      if (!affiliate) throw notFound('Affiliate');
      const provider = payoutProvider();
      let accountId = affiliate.stripeAccountId as string | undefined;
      if (!accountId) {
        accountId = (await fromProvider(provider.createConnectedAccount({ orgId: scope.orgId, affiliateId: params.id!, email: affiliate.email }))).accountId;
        await scope.transact(async (tx, audit) => {
          tx.update(scope.collection('affiliates').doc(params.id!), { stripeAccountId: accountId, updatedAt: new Date().toISOString() });
          tx.set(globalIndexDoc(collections.stripeAccountIndex, accountId!), { orgId: scope.orgId, affiliateId: params.id });
          audit({ action: 'affiliate.stripe_account', target: { type: 'affiliate', id: params.id! }, changes: { stripeAccountId: accountId } });
        });
      }
      const readAt = Math.floor(Date.now() / 1000);
      const account = await fromProvider(provider.getAccount(accountId));
      // The account as read now stands like an account.updated event of this second: an older event delivered late
      // must not undo it, and a newer one applied meanwhile must not be undone by it.
      const affiliateRef = scope.collection('affiliates').doc(params.id!);
      await scope.transact(async (tx) => void applyAccountState(tx, await tx.get(affiliateRef), account.payoutsEnabled, readAt));
      const returnUrl = body.returnUrl ?? `${config().publicBaseUrl}/v1/orgs/${scope.orgId}/affiliates/${params.id}`;
      const refreshUrlFrom = body.refreshUrl ? 'refreshUrl' : body.returnUrl ? 'returnUrl' : undefined;
      const callerFields = { ...(body.returnUrl ? { return_url: 'returnUrl' } : {}), ...(refreshUrlFrom ? { refresh_url: refreshUrlFrom } : {}) };
      const link = await fromProvider(provider.createOnboardingLink({ accountId, refreshUrl: body.refreshUrl ?? returnUrl, returnUrl }), callerFields);
      const updated = await scope.get<DocumentData>('affiliates', params.id!);
      return ok({ url: link.url, expiresAt: link.expiresAt, affiliate: toAffiliate(updated!) });
    },
  ),
];
