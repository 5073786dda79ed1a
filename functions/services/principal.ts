import type { Role } from '../../shared/domain/roles';

/** Who is calling: a signed-in user, or a machine holding an organisation's API key. */
export type Principal =
  | { kind: 'user'; userId: string; email: string }
  | { kind: 'apiKey'; keyId: string; orgId: string; role: Role; name: string }
  /** The platform itself: workers and scheduled jobs acting on one organisation's data. */
  | { kind: 'system'; name: string };

export function actorOf(p: Principal): { type: 'user' | 'apiKey' | 'system'; id: string; email?: string } {
  if (p.kind === 'user') return { type: 'user', id: p.userId, email: p.email };
  if (p.kind === 'apiKey') return { type: 'apiKey', id: p.keyId };
  return { type: 'system', id: p.name };
}
