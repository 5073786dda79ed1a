import { createHash } from 'node:crypto';
import { FieldPath, type CollectionReference, type DocumentData, type DocumentReference, type Query, type QueryDocumentSnapshot, type Transaction, type WhereFilterOp } from '@google-cloud/firestore';
import { collections } from '../../shared/names';
import { can, type Permission, type Role } from '../../shared/domain/roles';
import { documentIdPattern } from '../../shared/domain/schemas';
import { reportQuerySchema, type ReportRequest, type ScopedReportQuery } from '../../shared/analytics/report';
import { ApiError, forbidden, notFound, badRequest, zodDetails } from '../../shared/errors';
import { newId } from '../../shared/ids';
import { firestore } from '../adapters/firestore';
import { actorOf, type Principal } from './principal';

/**
 * The one gate to organisation data. An OrgScope exists only after the caller's membership and role were
 * checked; every read and write of `orgs/{orgId}/…` goes through it, and for the affiliate role it narrows
 * reads to the caller's own affiliate records. Not-a-member is reported as 404 so that other
 * organisations' ids reveal nothing.
 */

type OrgCollection = Exclude<(typeof collections)[keyof typeof collections], 'orgs' | GlobalIndex>;

/** For the affiliate role: which field ties a document to an affiliate (`__id__`: the document id itself). */
const affiliateOwnership: Partial<Record<OrgCollection, string>> = {
  affiliates: '__id__',
  links: 'affiliateId',
  clicks: 'affiliateId',
  conversions: 'affiliateId',
  ledger: 'affiliateId',
  counters: 'affiliateId',
  payouts: 'affiliateId',
};

/** Firestore's `in` filter takes at most this many values. */
const maxInValues = 30;

/** Sort order of list keys (ids are ASCII, sort values ISO strings or numbers), as Firestore orders them. */
const compare = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0);

/** Collections an affiliate may not read at all, whatever its permissions. */
const hiddenFromAffiliates = new Set<OrgCollection>(['members', 'apiKeys', 'auditLog', 'idempotencyKeys', 'postbackReceipts', 'visitors', 'payoutRuns', 'tierCounters', 'capUsage', 'locks']);

export interface ListOptions {
  /** Optional equality filters from a query string: a field whose value is undefined is not filtered on. */
  equals?: Record<string, string | undefined>;
  where?: [string, WhereFilterOp, unknown][];
  limit: number;
  cursor?: string | undefined;
  /** Newest first by this field (ties by id) instead of by id, for documents whose ids are not time-ordered. */
  newestFirstBy?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface AuditInput {
  action: string;
  target: { type: string; id: string };
  changes?: Record<string, unknown>;
}

export class OrgScope {
  private constructor(
    readonly orgId: string,
    readonly role: Role,
    readonly principal: Principal,
    /** undefined: every affiliate; otherwise the only affiliates this caller may see. */
    readonly affiliateIds: readonly string[] | undefined,
  ) {}

  /** For workers and scheduled jobs: the platform acting on one organisation, never on behalf of a caller. */
  static system(orgId: string, name: string): OrgScope {
    return new OrgScope(orgId, 'owner', { kind: 'system', name }, undefined);
  }

  /** Resolves the caller's role in the organisation and checks the permission the route needs. */
  static async open(principal: Principal, orgId: string, permission: Permission): Promise<OrgScope> {
    const db = firestore();
    let role: Role;
    let affiliateIds: string[] | undefined;
    if (principal.kind === 'system') throw forbidden('System principals use OrgScope.system');
    if (principal.kind === 'apiKey') {
      if (principal.orgId !== orgId) throw notFound('Organisation');
      role = principal.role;
    } else {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(orgId)) throw notFound('Organisation');
      const member = await db.doc(`${collections.orgs}/${orgId}/${collections.members}/${principal.userId}`).get();
      if (!member.exists) throw notFound('Organisation');
      role = member.get('role') as Role;
      if (role === 'affiliate') {
        const mine = await db
          .collection(`${collections.orgs}/${orgId}/${collections.affiliates}`)
          .where('userIds', 'array-contains', principal.userId)
          .select()
          .get();
        affiliateIds = mine.docs.map((d) => d.id);
      }
    }
    if (!can(role, permission)) throw forbidden(`The ${role} role may not ${describe(permission)}`);
    return new OrgScope(orgId, role, principal, affiliateIds);
  }

  get orgRef(): DocumentReference {
    return firestore().doc(`${collections.orgs}/${this.orgId}`);
  }

  collection(name: OrgCollection): CollectionReference {
    return this.orgRef.collection(name);
  }

  /**
   * A report query for this organisation's analytics, narrowed like every read here: it always carries this
   * organisation's id, and for an affiliate user its own affiliates' ids; the analytics port takes no other. The
   * request is validated here (a 400 naming each field), so callers may hand it over as the client sent it.
   */
  reportQuery(request: { [K in keyof ReportRequest]?: unknown }, affiliateId?: string): ScopedReportQuery {
    // One affiliate asked for narrows what this caller sees; it never widens it.
    const mine = this.affiliateIds ? [...this.affiliateIds] : undefined;
    const affiliateIds = affiliateId === undefined ? mine : mine ? mine.filter((id) => id === affiliateId) : [affiliateId];
    const q = reportQuerySchema.safeParse({ ...request, orgId: this.orgId, affiliateIds });
    if (!q.success) throw badRequest('The report query is invalid', zodDetails(q.error));
    return q.data as ScopedReportQuery;
  }

  /** True when the caller may see records of this affiliate. */
  seesAffiliate(affiliateId: string): boolean {
    return this.affiliateIds === undefined || this.affiliateIds.includes(affiliateId);
  }

  /** For writes on behalf of an affiliate (an affiliate user creating its own links). */
  assertActsFor(affiliateId: string): void {
    if (!this.seesAffiliate(affiliateId)) throw notFound('Affiliate');
  }

  private visible(name: OrgCollection, id: string, data: DocumentData): boolean {
    if (this.affiliateIds === undefined) return true;
    if (hiddenFromAffiliates.has(name)) return false;
    const field = affiliateOwnership[name];
    if (!field) return true;
    const owner = field === '__id__' ? id : (data[field] as string | undefined);
    return owner !== undefined && this.affiliateIds.includes(owner);
  }

  async get<T>(name: OrgCollection, id: string): Promise<T | undefined> {
    if (!id || id.includes('/')) return undefined;
    const snap = await this.collection(name).doc(id).get();
    if (!snap.exists || !this.visible(name, snap.id, snap.data()!)) return undefined;
    return snap.data() as T;
  }

  async getOrThrow<T>(name: OrgCollection, id: string, what: string): Promise<T> {
    const found = await this.get<T>(name, id);
    if (!found) throw notFound(what);
    return found;
  }

  /** Newest first (ids sort that way, see shared/ids.ts); the cursor is the last id of the page. */
  async list<T>(name: OrgCollection, opts: ListOptions): Promise<Page<T>> {
    let q: Query = this.collection(name);
    for (const [field, value] of Object.entries(opts.equals ?? {})) if (value !== undefined) q = q.where(field, '==', value);
    for (const [field, op, value] of opts.where ?? []) q = q.where(field, op, value);
    const invalidCursor = () => badRequest('Invalid cursor', [{ field: 'cursor', message: 'is not a cursor from a previous page' }]);
    const sortBy = opts.newestFirstBy;
    let after: unknown[] = [];
    if (opts.cursor && sortBy) {
      try {
        after = JSON.parse(Buffer.from(opts.cursor, 'base64url').toString());
      } catch {
        throw invalidCursor();
      }
      if (!isSortCursor(after)) throw invalidCursor();
    } else if (opts.cursor) {
      // An id (reserved ones like __x__ included) Firestore would refuse is a client's mistake, not a 500.
      if (!documentIdPattern.test(opts.cursor)) throw invalidCursor();
      after = [opts.cursor];
    }
    const page = (part: Query) => {
      const ordered = sortBy ? part.orderBy(sortBy, 'desc').orderBy(FieldPath.documentId()) : part.orderBy(FieldPath.documentId());
      return (after.length ? ordered.startAfter(...after) : ordered).limit(opts.limit + 1).get();
    };
    // Each narrowed query is ordered and bounded alike, so the page is the first of their results merged.
    const snaps = await Promise.all(this.narrow(name, q, opts.equals).map(page));
    const sortValue = (d: QueryDocumentSnapshot) => d.get(sortBy!) as string | number;
    const order = (a: QueryDocumentSnapshot, b: QueryDocumentSnapshot) =>
      (sortBy ? compare(sortValue(b), sortValue(a)) : 0) || compare(a.id, b.id);
    const found = snaps.length === 1 ? snaps[0]!.docs : snaps.flatMap((snap) => snap.docs).sort(order);
    const docs = found.slice(0, opts.limit);
    const last = docs[docs.length - 1];
    const cursorOf = (d: QueryDocumentSnapshot) => (sortBy ? Buffer.from(JSON.stringify([sortValue(d), d.id])).toString('base64url') : d.id);
    return {
      items: docs.map((d) => d.data() as T),
      nextCursor: found.length > opts.limit && last ? cursorOf(last) : null,
    };
  }

  /**
   * Applies the affiliate narrowing to a query on one of this organisation's collections. For an affiliate user
   * that is one query per 30 of its affiliates (Firestore's `in` takes at most 30 values), whose results together
   * are what it may see; none when it may see nothing. `equals`: the query's equality filters, so that a query
   * already for one affiliate is narrowed to that one alone.
   */
  narrow(name: OrgCollection, q: Query, equals?: Record<string, string | undefined>): Query[] {
    if (this.affiliateIds === undefined) return [q];
    if (hiddenFromAffiliates.has(name)) throw forbidden('The affiliate role may not read this');
    const field = affiliateOwnership[name];
    if (!field) return [q];
    const only = field === '__id__' ? undefined : equals?.[field];
    const ids = only === undefined ? this.affiliateIds : this.affiliateIds.filter((id) => id === only);
    const path = field === '__id__' ? FieldPath.documentId() : field;
    const parts: Query[] = [];
    for (let i = 0; i < ids.length; i += maxInValues) parts.push(q.where(path, 'in', ids.slice(i, i + maxInValues)));
    return parts;
  }

  /** Runs a read-modify-write on this organisation's documents, with an audit record committed alongside. */
  async transact<R>(fn: (tx: Transaction, audit: (entry: AuditInput) => void) => Promise<R>): Promise<R> {
    return firestore().runTransaction(async (tx) => {
      const entries: AuditInput[] = [];
      const result = await fn(tx, (e) => entries.push(e));
      for (const e of entries) this.writeAudit(tx, e);
      return result;
    });
  }

  /**
   * Creates a document once per client Idempotency-Key: a retried request returns what the first one made.
   * `make` runs inside the transaction and returns the new id and document.
   */
  async createOnce<T extends DocumentData>(
    name: OrgCollection,
    idempotency: Idempotency | undefined,
    make: (tx: Transaction, audit: (entry: AuditInput) => void) => Promise<{ id: string; doc: T }>,
  ): Promise<{ created: boolean; doc: T }> {
    const keyRef = idempotency ? this.collection('idempotencyKeys').doc(this.idempotencyDocId(name, idempotency.key)) : undefined;
    return this.transact(async (tx, audit) => {
      if (keyRef) {
        const seen = await tx.get(keyRef);
        if (seen.exists) {
          const previous = await tx.get(this.collection(name).doc(seen.get('id') as string));
          // The caller may have lost sight of what it made (an affiliate user unlinked since): make it anew.
          if (previous.exists && this.visible(name, previous.id, previous.data()!)) {
            assertSameRequest(seen.get('fingerprint'), idempotency!);
            return { created: false, doc: previous.data() as T };
          }
        }
      }
      const { id, doc } = await make(tx, audit);
      tx.create(this.collection(name).doc(id), doc);
      if (keyRef) tx.set(keyRef, { id, collection: name, fingerprint: idempotency!.fingerprint, at: new Date().toISOString() });
      return { created: true, doc };
    });
  }

  /**
   * Keys are chosen by clients, so two callers may pick the same one: each caller's keys are its own, or a
   * replay would hand one caller what another made.
   */
  private idempotencyDocId(name: OrgCollection, idempotencyKey: string): string {
    const actor = actorOf(this.principal);
    return createHash('sha256').update(`${name}\u0000${actor.type}:${actor.id}\u0000${idempotencyKey}`).digest('hex');
  }

  private writeAudit(tx: Transaction, e: AuditInput): void {
    writeAuditRecord(tx, this.orgRef, this.principal, e);
  }
}

function writeAuditRecord(tx: Transaction, orgRef: DocumentReference, principal: Principal, e: AuditInput): void {
  const id = newId('aud');
  tx.create(orgRef.collection(collections.auditLog).doc(id), {
    id, at: new Date().toISOString(), actor: actorOf(principal), action: e.action, target: e.target, changes: e.changes ?? {},
  });
}

/** A cursor of a newest-first list is [sort value, document id]; anything else would make the query itself throw. */
function isSortCursor(after: unknown): after is [string | number, string] {
  if (!Array.isArray(after) || after.length !== 2) return false;
  const [value, id] = after as unknown[];
  const sortable = typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
  return sortable && typeof id === 'string' && documentIdPattern.test(id);
}

function describe(permission: Permission): string {
  const [what, how] = permission.split(':') as [string, string];
  return `${how === 'read' ? 'read' : 'change'} ${what.replace(/([A-Z])/g, ' $1').toLowerCase()}`;
}

type GlobalIndex = typeof collections.linkIndex | typeof collections.apiKeyIndex | typeof collections.postbackTokenIndex | typeof collections.stripeAccountIndex | typeof collections.stripeEvents | typeof collections.heldAffiliates;

/** Global lookup documents (link id → org, key hash → org) written alongside an organisation's own documents. */
export function globalIndexDoc(name: GlobalIndex, id: string): DocumentReference {
  return firestore().collection(name).doc(id);
}

/** A global lookup collection whole, for the jobs that sweep every organisation. */
export function globalIndex(name: GlobalIndex): CollectionReference {
  return firestore().collection(name);
}

/**
 * Creating an organisation is the one write that happens before any membership exists: the creator becomes
 * its owner in the same transaction. `setup` adds the organisation's other initial documents.
 */
export async function createOrganisation(
  principal: Principal & { kind: 'user' },
  orgId: string,
  org: Record<string, unknown>,
  setup: (tx: Transaction, orgRef: DocumentReference) => void,
  idempotency?: Idempotency,
): Promise<{ created: boolean; org: DocumentData }> {
  const db = firestore();
  const orgRef = db.doc(`${collections.orgs}/${orgId}`);
  return db.runTransaction(async (tx) => {
    const existing = await tx.get(orgRef);
    if (existing.exists) {
      // A retried create (same Idempotency-Key) by its creator gets the first result back.
      if (existing.get('createdBy') !== principal.userId) throw forbidden('That Idempotency-Key was used by someone else');
      if (idempotency) assertSameRequest(existing.get('createdWith'), idempotency);
      // Its creator may have left it since: a replay must not show it an organisation it no longer belongs to.
      if (!(await tx.get(orgRef.collection(collections.members).doc(principal.userId))).exists) throw notFound('Organisation');
      return { created: false, org: existing.data()! };
    }
    const now = new Date().toISOString();
    tx.create(orgRef, { ...org, createdBy: principal.userId, ...(idempotency ? { createdWith: idempotency.fingerprint } : {}) });
    tx.create(orgRef.collection(collections.members).doc(principal.userId), {
      userId: principal.userId, email: principal.email, role: 'owner', orgId, createdAt: now, updatedAt: now,
    });
    setup(tx, orgRef);
    writeAuditRecord(tx, orgRef, principal, { action: 'org.create', target: { type: 'org', id: orgId }, changes: { name: org.name, type: org.type, plan: org.plan } });
    return { created: true, org: { ...org, createdBy: principal.userId } };
  });
}

/**
 * A client's Idempotency-Key, with a fingerprint of the request it came with (method, path, validated body).
 * The key stands for that request only: the same key with another request is refused (as Stripe does), where
 * replaying the first result would answer "created" for something never made.
 */
export interface Idempotency {
  key: string;
  fingerprint: string;
}

/** Records made before fingerprints were kept have none: those replay as they always did. */
function assertSameRequest(recorded: unknown, idempotency: Idempotency): void {
  if (typeof recorded === 'string' && recorded !== idempotency.fingerprint) {
    throw new ApiError('conflict', 'This Idempotency-Key was already used with a different request; send a new key for a new request', [{ field: 'Idempotency-Key', message: 'was used with a different request' }]);
  }
}

/** The organisations a caller belongs to: a user's memberships, or an API key's one organisation. */
export async function listMyOrgs(principal: Principal): Promise<DocumentData[]> {
  const db = firestore();
  let ids: string[];
  if (principal.kind === 'system') return [];
  if (principal.kind === 'apiKey') {
    ids = [principal.orgId];
  } else {
    const memberships = await db.collectionGroup(collections.members).where('userId', '==', principal.userId).limit(500).get();
    ids = memberships.docs.map((d) => d.get('orgId') as string);
  }
  if (!ids.length) return [];
  const docs = await db.getAll(...ids.map((id) => db.doc(`${collections.orgs}/${id}`)));
  return docs.filter((d) => d.exists).map((d) => d.data()!).sort((a, b) => String(a.id).localeCompare(String(b.id)));
}
