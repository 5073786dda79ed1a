import { config } from '../../shared/config';
import { documentId } from '../../shared/domain/schemas';
import { badGateway } from '../../shared/errors';
import { devUserId } from './dev-identity';
import { authClient } from './supabase-identity';

/** The id memberships are keyed by: Supabase's are UUIDs, and anything else must not become a document path. */
function userIdOf(id: unknown): string {
  const r = documentId.safeParse(id);
  if (!r.success) throw badGateway('Supabase Auth answered with a user id this platform cannot use');
  return r.data;
}

/** GoTrue's codes for an address that already has an account (invite.go; older servers said user_already_exists). */
const alreadyRegistered = new Set(['email_exists', 'user_already_exists']);

/**
 * Resolves a colleague's email to the user id their access tokens will carry, so a membership can be keyed
 * by user id before that person first signs in. Production asks Supabase's admin API (inviting the address
 * if it has no account yet); locally the dev identity derives the id from the email.
 */
export async function resolveUserIdByEmail(email: string): Promise<string> {
  const c = config();
  if (!c.SUPABASE_SERVICE_ROLE_KEY) {
    if (c.ABP_ENV === 'production') throw new Error('SUPABASE_SERVICE_ROLE_KEY is required to invite members');
    return devUserId(email);
  }
  const admin = authClient(c.SUPABASE_SERVICE_ROLE_KEY).admin;
  const invited = await admin.inviteUserByEmail(email);
  if (invited.data.user) return userIdOf(invited.data.user.id);
  // Only an existing account is worth a search; any other refusal (bad address, rate limit, keys) is final.
  if (invited.error && !alreadyRegistered.has(invited.error.code ?? '')) throw invited.error;
  // Already registered: find the account by paging through users (the admin API has no lookup by email).
  for (let page = 1; page <= 100; page++) {
    const { data, error } = await admin.listUsers({ page, perPage: 1000 });
    if (error) throw error;
    // Supabase Auth lower-cases emails (so the invite above matched case-insensitively); compare the same way.
    const found = data.users.find((u) => u.email?.toLowerCase() === email.toLowerCase());
    if (found) return userIdOf(found.id);
    if (data.users.length < 1000) break;
  }
  throw invited.error ?? new Error(`No Supabase user for ${email}`);
}
