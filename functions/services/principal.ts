import type { Role } from '../../shared/domain/roles';

/** Who is calling: a signed-in user, or a machine holding an organisation's API key. */
export type Principal =
  | { kind: 'user'; userId: string; email: string }
  | { kind: 'apiKey'; keyId: string; orgId: string; role: Role; name: string };

export function actorOf(p: Principal): { type: 'user' | 'apiKey'; id: string; email?: string } {
  return p.kind === 'user' ? { type: 'user', id: p.userId, email: p.email } : { type: 'apiKey', id: p.keyId };
}
