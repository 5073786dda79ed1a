import type { OrgScope } from '../services/tenancy';

/** Affiliates see what they earn, never what the advertiser pays: drop `revenue` from what they read. */
export function withoutRevenueFor<T extends object>(scope: OrgScope, value: T): T {
  if (scope.role !== 'affiliate') return value;
  const { revenue: _hidden, ...rest } = value as T & { revenue?: unknown };
  return rest as T;
}
