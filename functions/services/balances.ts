import { AggregateField, type Query, type QuerySnapshot } from '@google-cloud/firestore';
import { balanceOf, balanceStatuses, type Balance, type BalanceStatus } from '../../shared/domain/ledger';
import { firestore } from '../adapters/firestore';
import type { OrgScope } from './tenancy';

/**
 * An affiliate's balance per currency, summed by Firestore from the index (one billed read per 1,000 entries)
 * rather than by reading every ledger entry it ever earned: an affiliate with a few hundred thousand
 * conversions would otherwise cost as many reads, and the memory to hold them, on every look at its balance.
 *
 * Every sum is read at one moment (a read-only transaction): a payout moving entries from approved to claimed to
 * paid while the sums are taken would otherwise show its money twice, or not at all.
 */
export async function affiliateBalances(scope: OrgScope, affiliateId: string): Promise<Balance[]> {
  // The same narrowing every read of the ledger goes through: none for an affiliate this caller may not see.
  const [mine] = scope.narrow('ledger', scope.collection('ledger').where('affiliateId', '==', affiliateId), { affiliateId });
  if (!mine) return [];
  return firestore().runTransaction(
    async (tx) => {
      const currencies = await currenciesIn(mine, (q) => tx.get(q));
      return Promise.all(
        currencies.map(async (currency) => {
          const sums = await Promise.all(
            balanceStatuses.map(async (status) => {
              const agg = mine.where('currency', '==', currency).where('status', '==', status).aggregate({ amount: AggregateField.sum('amount') });
              return [status, (await tx.get(agg)).data().amount] as const;
            }),
          );
          return balanceOf(currency, Object.fromEntries(sums) as Record<BalanceStatus, number>);
        }),
      );
    },
    { readOnly: true },
  );
}

/** The distinct currencies of the query's entries, in order: one single-document read per currency. */
async function currenciesIn(q: Query, get: (q: Query) => Promise<QuerySnapshot>): Promise<string[]> {
  const found: string[] = [];
  for (;;) {
    const next = q.orderBy('currency').select('currency').limit(1);
    const snap = await get(found.length ? next.startAfter(found[found.length - 1]) : next);
    if (snap.empty) return found;
    found.push(snap.docs[0]!.get('currency') as string);
  }
}
