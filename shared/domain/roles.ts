/**
 * Who may do what. Checked in one place (functions/services/tenancy.ts) before any organisation data is
 * touched; handlers only declare the permission a route needs.
 */
export const roles = ['owner', 'admin', 'manager', 'analyst', 'affiliate'] as const;
export type Role = (typeof roles)[number];

export type Permission =
  | 'org:read'
  | 'org:write'
  | 'members:read'
  | 'members:write'
  | 'apiKeys:read'
  | 'apiKeys:write'
  | 'campaigns:read'
  | 'campaigns:write'
  | 'affiliates:read'
  | 'affiliates:write'
  | 'links:read'
  | 'links:write'
  | 'postback:read'
  | 'postback:write'
  | 'audit:read'
  | 'tracking:read'
  | 'reports:read'
  | 'conversions:write'
  | 'payouts:read'
  | 'payouts:write';

const everything: Permission[] = [
  'org:read', 'org:write', 'members:read', 'members:write', 'apiKeys:read', 'apiKeys:write',
  'campaigns:read', 'campaigns:write', 'affiliates:read', 'affiliates:write', 'links:read', 'links:write',
  'postback:read', 'postback:write', 'audit:read', 'tracking:read', 'reports:read', 'conversions:write',
  'payouts:read', 'payouts:write',
];

const readOnly: Permission[] = [
  'org:read', 'members:read', 'campaigns:read', 'affiliates:read', 'links:read', 'audit:read',
  'tracking:read', 'reports:read', 'payouts:read',
];

const grants: Record<Role, ReadonlySet<Permission>> = {
  owner: new Set(everything),
  admin: new Set(everything),
  manager: new Set([
    ...readOnly, 'campaigns:write', 'affiliates:write', 'links:write', 'postback:read', 'conversions:write',
  ]),
  analyst: new Set(readOnly),
  // An affiliate's reads are further narrowed to its own affiliate records by the tenancy scope.
  affiliate: new Set(['org:read', 'campaigns:read', 'affiliates:read', 'links:read', 'links:write', 'tracking:read', 'reports:read', 'payouts:read']),
};

export function can(role: Role, permission: Permission): boolean {
  return grants[role].has(permission);
}

/** Roles a member may hand out: nobody grants more than they hold, and only owners make owners. */
export function mayGrant(actor: Role, target: Role): boolean {
  if (actor === 'owner') return true;
  if (actor === 'admin') return target !== 'owner';
  return false;
}
