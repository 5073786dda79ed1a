import { z } from 'zod';
import { currencySchema, minorUnitsSchema, saleAmountSchema } from '../money';
import { roles } from './roles';
import { unknownMacros } from './macros';

/** Request and resource schemas of the admin API. The OpenAPI document is generated from these. */

export const orgTypes = ['advertiser', 'agency', 'platform'] as const;
export const plans = ['starter', 'professional', 'enterprise'] as const;

const name = z.string().trim().min(1, 'must not be empty').max(200);

/**
 * What a Firestore document id may be here: every id the platform mints (shared/ids.ts, signed click ids with
 * their dots, Supabase's UUIDs) fits, while `/` (a path separator to Firestore), `.`, `..` and `__…__` (reserved)
 * do not, so an id from a client can never make the Firestore client throw.
 */
export const documentIdPattern = /^(?!\.\.?$)(?!__.*__$)[A-Za-z0-9._-]{1,128}$/;
export const documentId = z.string().regex(documentIdPattern, "must be an id: 1-128 letters, digits, '.', '_' or '-'");
export const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048, { error: 'must be at most 2048 characters' });

export const createOrgBody = z
  .object({ name, type: z.enum(orgTypes), plan: z.enum(plans).default('starter') })
  .strict()
  .meta({ id: 'CreateOrg' });

/** When scheduled payout runs happen (UTC): weekly on an ISO weekday (1 = Monday), or monthly on a day 1-28. */
export const payoutScheduleSchema = z
  .discriminatedUnion('frequency', [
    z.object({ frequency: z.literal('weekly'), day: z.number().int().min(1).max(7) }).strict(),
    z.object({ frequency: z.literal('monthly'), day: z.number().int().min(1).max(28) }).strict(),
  ])
  .meta({ id: 'PayoutSchedule' });

export const patchOrgBody = z
  .object({ name: name.optional(), type: z.enum(orgTypes).optional(), plan: z.enum(plans).optional(), fallbackUrl: httpUrl.nullable().optional(), payoutSchedule: payoutScheduleSchema.nullable().optional() })
  .strict()
  .meta({ id: 'PatchOrg' });

export const orgResource = z
  .object({ id: z.string(), name: z.string(), type: z.enum(orgTypes), plan: z.enum(plans), fallbackUrl: z.string().nullable(), payoutSchedule: payoutScheduleSchema.nullable(), createdAt: z.string(), updatedAt: z.string() })
  .meta({ id: 'Org' });

/** At most 254 characters (RFC 5321's path limit): anything longer is no address, and no Firestore query value. */
const email = z.email().max(254).transform((e) => e.toLowerCase());
export const createMemberBody = z.object({ email, role: z.enum(roles) }).strict().meta({ id: 'CreateMember' });
export const patchMemberBody = z.object({ role: z.enum(roles) }).strict().meta({ id: 'PatchMember' });
export const memberResource = z
  .object({ userId: z.string(), email: z.string(), role: z.enum(roles), createdAt: z.string(), updatedAt: z.string() })
  .meta({ id: 'Member' });

/** Machine keys act for the organisation, never as an owner nor as one affiliate. */
export const apiKeyRoles = ['admin', 'manager', 'analyst'] as const;
export const createApiKeyBody = z.object({ name, role: z.enum(apiKeyRoles) }).strict().meta({ id: 'CreateApiKey' });
export const apiKeyResource = z
  .object({ id: z.string(), name: z.string(), role: z.enum(apiKeyRoles), prefix: z.string(), createdAt: z.string(), createdBy: z.string(), revokedAt: z.string().nullable() })
  .meta({ id: 'ApiKey' });
export const createdApiKeyResource = apiKeyResource.extend({ key: z.string().describe('Shown once; only its hash is stored') }).meta({ id: 'CreatedApiKey' });

const percent = z.number().min(0).max(100).multipleOf(0.01, 'at most two decimals');
const minConversions = z.number().int().min(1);

function ascendingTiers(tiers: { minConversions: number }[] | undefined): boolean {
  return !tiers || tiers.every((t, i) => i === 0 || t.minConversions > tiers[i - 1]!.minConversions);
}
const tiersMessage = { message: 'tiers must be in ascending order of minConversions', path: ['tiers'] };

/** What an affiliate earns per conversion. Tiers apply by the affiliate's approved conversions on the campaign this calendar month. */
export const payoutRule = z
  .discriminatedUnion('type', [
    z.object({ type: z.literal('cpa'), amount: saleAmountSchema, tiers: z.array(z.object({ minConversions, amount: saleAmountSchema }).strict()).max(20).optional() }).strict(),
    z.object({ type: z.literal('revshare'), percent, tiers: z.array(z.object({ minConversions, percent }).strict()).max(20).optional() }).strict(),
  ])
  .refine((p) => ascendingTiers(p.tiers), tiersMessage)
  .meta({ id: 'PayoutRule' });

/** What the advertiser pays the network per conversion. */
export const revenueRule = z
  .discriminatedUnion('type', [
    z.object({ type: z.literal('cpa'), amount: saleAmountSchema }).strict(),
    z.object({ type: z.literal('cps'), percent }).strict(),
  ])
  .meta({ id: 'RevenueRule' });

const capWindow = z
  .object({ clicks: z.number().int().min(1).optional(), conversions: z.number().int().min(1).optional(), payout: minorUnitsSchema.optional() })
  .strict();
export const capsSchema = z
  .object({ daily: capWindow.optional(), monthly: capWindow.optional() })
  .strict()
  .meta({
    id: 'Caps',
    description:
      'Limits per UTC day and month. conversions and payout (minor units of the campaign currency) hold at booking: a conversion past one is recorded as ' +
      'rejected with the reason daily_conversion_cap, monthly_conversion_cap, daily_payout_cap or monthly_payout_cap, never credited (rejecting or reversing a credited ' +
      'conversion later gives its room back; a volume tier at approval changes the payout counted). clicks (billable clicks) are soft: ' +
      'once the live count reaches the cap, visitors go to the organisation fallbackUrl (or get a 404) and are not recorded; the count is seconds behind.',
  });

export const deviceTypes = ['desktop', 'mobile', 'tablet'] as const;
export const targetingSchema = z
  .object({
    countries: z.array(z.string().regex(/^[A-Za-z]{2}$/, 'must be ISO 3166-1 alpha-2 codes').transform((c) => c.toUpperCase())).max(250).optional(),
    devices: z.array(z.enum(deviceTypes)).max(deviceTypes.length).refine((d) => new Set(d).size === d.length, 'must not repeat a device').optional(),
  })
  .strict()
  .meta({ id: 'Targeting' });

export const campaignStatuses = ['draft', 'active', 'paused', 'archived'] as const;

export const destinationUrl = z
  .string()
  .max(2048)
  .superRefine((value, ctx) => {
    const unknown = unknownMacros(value);
    if (unknown.length) ctx.addIssue({ code: 'custom', message: `unknown macros ${unknown.join(', ')}` });
    // The host is fixed by the advertiser: macros may only fill the path, query or fragment. Decided as a browser
    // reads the URL, filled two ways: where a macro's value would land in the scheme, credentials, host or port, the
    // two parse differently (`https:///{sub1}` is `https://{sub1}/` to a browser, which skips the extra slashes).
    let one: URL, other: URL;
    try {
      one = new URL(value.replace(/\{[a-z0-9_]+\}/g, 'macroa'));
      other = new URL(value.replace(/\{[a-z0-9_]+\}/g, 'macrob'));
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be an absolute http(s) URL' });
      return;
    }
    if (one.protocol !== 'http:' && one.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: 'must be an absolute http(s) URL' });
    else if (one.origin !== other.origin || one.username !== other.username || one.password !== other.password) {
      ctx.addIssue({ code: 'custom', message: 'macros may only fill the path, query or fragment, not the scheme, credentials or host' });
    }
  });

/** The longest attribution window a campaign may have: also how far back a report looks for a conversion's click. */
export const maxAttributionWindowDays = 365;

const campaignFields = {
  name,
  destinationUrl,
  status: z.enum(campaignStatuses),
  currency: currencySchema,
  payout: payoutRule,
  revenue: revenueRule,
  attributionWindowDays: z.number().int().min(1).max(maxAttributionWindowDays),
  holdDays: z.number().int().min(0).max(365),
  caps: capsSchema,
  targeting: targetingSchema,
};

export const createCampaignBody = z
  .object({
    ...campaignFields,
    status: campaignFields.status.default('draft'),
    currency: campaignFields.currency.default('USD'),
    attributionWindowDays: campaignFields.attributionWindowDays.default(30),
    holdDays: campaignFields.holdDays.default(30),
    caps: campaignFields.caps.default({}),
    targeting: campaignFields.targeting.default({}),
  })
  .strict()
  .meta({ id: 'CreateCampaign' });

export const patchCampaignBody = z
  .object(Object.fromEntries(Object.entries(campaignFields).map(([k, v]) => [k, v.optional()])) as { [K in keyof typeof campaignFields]: z.ZodOptional<(typeof campaignFields)[K]> })
  .strict()
  .meta({ id: 'PatchCampaign' });

export const campaignResource = z
  .object({
    id: z.string(),
    name: z.string(),
    destinationUrl: z.string(),
    status: z.enum(campaignStatuses),
    currency: z.string(),
    payout: payoutRule,
    revenue: revenueRule.optional().describe('Hidden from affiliates'),
    attributionWindowDays: z.number(),
    holdDays: z.number(),
    caps: capsSchema.optional(),
    targeting: targetingSchema,
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'Campaign' });

export const affiliateStatuses = ['active', 'paused', 'blocked'] as const;
const affiliateFields = {
  name,
  email,
  status: z.enum(affiliateStatuses),
  payoutCurrency: currencySchema,
  minimumPayout: minorUnitsSchema,
  payoutOverrides: z.record(documentId, payoutRule).describe('Per-campaign payout rules, keyed by campaign id'),
  userIds: z.array(documentId).max(50).describe('Users who act as this affiliate (members with role affiliate)'),
};
export const createAffiliateBody = z
  .object({
    ...affiliateFields,
    status: affiliateFields.status.default('active'),
    payoutCurrency: affiliateFields.payoutCurrency.default('USD'),
    minimumPayout: affiliateFields.minimumPayout.default(5000),
    payoutOverrides: affiliateFields.payoutOverrides.default({}),
    userIds: affiliateFields.userIds.default([]),
  })
  .strict()
  .meta({ id: 'CreateAffiliate' });
export const patchAffiliateBody = z
  .object(Object.fromEntries(Object.entries(affiliateFields).map(([k, v]) => [k, v.optional()])) as { [K in keyof typeof affiliateFields]: z.ZodOptional<(typeof affiliateFields)[K]> })
  .strict()
  .meta({ id: 'PatchAffiliate' });
export const affiliateResource = z
  .object({
    id: z.string(), name: z.string(), email: z.string(), status: z.enum(affiliateStatuses), payoutCurrency: z.string(), minimumPayout: z.number(),
    payoutOverrides: z.record(z.string(), payoutRule), userIds: z.array(z.string()),
    stripeAccountId: z.string().nullable(), payoutsEnabled: z.boolean(), createdAt: z.string(), updatedAt: z.string(),
  })
  .meta({ id: 'Affiliate' });

export const createLinkBody = z.object({ campaignId: documentId, affiliateId: documentId }).strict().meta({ id: 'CreateLink' });
export const linkResource = z
  .object({ id: z.string(), url: z.string(), campaignId: z.string(), affiliateId: z.string(), createdAt: z.string() })
  .meta({ id: 'Link' });

export const postbackConfigResource = z
  .object({
    token: z.string().describe("The postback's token: keep it on the advertiser's server"),
    postbackUrl: z.string().describe('Template of the postback call; replace the {placeholders}'),
    pixelToken: z.string().describe('The pixel\'s token: it is visible in checkout pages, and accepted only by /pixel'),
    pixelUrl: z.string().describe('Template of the pixel for checkout pages; the click id comes from the click\'s cookie'),
  })
  .meta({ id: 'PostbackConfig' });

export const auditEntryResource = z
  .object({
    id: z.string(),
    at: z.string(),
    actor: z.object({ type: z.enum(['user', 'apiKey', 'system']), id: z.string(), email: z.string().optional() }),
    action: z.string(),
    target: z.object({ type: z.string(), id: z.string() }),
    changes: z.record(z.string(), z.unknown()),
  })
  .meta({ id: 'AuditEntry' });

export const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(200).optional(),
});

export type Org = z.infer<typeof orgResource>;
export type Member = z.infer<typeof memberResource>;
export type Campaign = z.infer<typeof campaignResource> & { revenue: z.infer<typeof revenueRule>; caps: z.infer<typeof capsSchema> };
export type Affiliate = z.infer<typeof affiliateResource>;
export type Link = z.infer<typeof linkResource>;
export type PayoutRule = z.infer<typeof payoutRule>;
export type AuditEntry = z.infer<typeof auditEntryResource>;

/** Money per currency, as reports, live stats and balances give it: currency → integer minor units. */
const moneyByCurrency = z.record(z.string(), z.number().int()).describe('Currency → integer minor units; a currency appears once it has money');
/** What reports and live stats count, for a row or in total. */
export const metricsResource = z
  .object({
    clicks: z.number().int().describe('Clicks by people: bot clicks (known crawlers, link previews, HEAD requests) are not in it'),
    uniqueClicks: z.number().int().describe('Clicks (not bots) with no click by the same visitor on the same link in the 60 minutes before'),
    botClicks: z.number().int().describe('Clicks recorded as bots: redirected, never billable'),
    conversions: z.number().int().describe('Conversions that stand: not rejected, not reversed'),
    revenue: moneyByCurrency.optional().describe('What advertisers owe (not shown to affiliate users)'),
    payout: moneyByCurrency,
  })
  .meta({ id: 'Metrics' });
export const balanceResource = z
  .object({
    affiliateId: z.string(),
    balances: z.array(z.object({ currency: z.string(), pending: z.number().int(), approved: z.number().int(), paid: z.number().int(), available: z.number().int() })),
  })
  .meta({ id: 'Balance' });
