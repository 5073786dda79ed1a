import { groupCommit, type GroupCommitOptions, type Settled } from '../../shared/group-commit';

/**
 * The workers' writes in groups: the deliveries a worker has in hand at once are read together and
 * committed in one atomic batch (one round trip instead of one transaction each).
 *
 * - `writeGroup` answers per item: an item that cannot even be prepared (an id Firestore refuses, say) is
 *   rejected on its own and left out of the batch.
 * - A batch that fails on a conflict (something in it changed since it was read: a redelivery handled
 *   elsewhere, the same visitor on another instance) is read and tried once more as a whole, and if it
 *   conflicts again each item is written on its own, the careful way, a few at a time.
 * - A batch refused for any other lasting reason is split the same way, so that one bad item fails only
 *   its own delivery (to end in the dead-letter topic), never its neighbours'.
 * - A transient failure (unavailable, deadline, overload) fails the group's deliveries as they are: Pub/Sub
 *   redelivers them later, which is gentler on a struggling backend than splitting them into more requests.
 * - The same item delivered twice while the first is still being written (Pub/Sub redelivers on a short
 *   ack deadline) waits for the first one's outcome instead of racing it into a conflict.
 */
export interface GroupedWritesOptions<T> extends GroupCommitOptions<T> {
  /**
   * Items with the same key are the same delivery: one arriving while another is being written shares its
   * outcome. Different items may still write the same document (two postbacks of one sale naming different
   * click ids, say): `writeGroup` must book them one after the other, and `writeAlone` must check what is there.
   */
  keyOf(item: T): string;
}

/** Items written on their own at once, after a group failed: enough to overlap round trips, few enough not to contend. */
const aloneConcurrency = 8;

export function groupedWrites<T, R>(
  writeGroup: (items: T[]) => Promise<Settled<R>[]>,
  writeAlone: (item: T) => Promise<R>,
  opts: GroupedWritesOptions<T>,
): (item: T) => Promise<R> {
  const commit = groupCommit<T, R>(async (items) => {
    try {
      return await writeGroup(items);
    } catch (err) {
      if (isTransient(err)) throw err;
      if (!isConflict(err) && items.length === 1) throw err; // nothing to split, nothing changed to see
      if (isConflict(err) && items.length > 1) {
        try {
          return await writeGroup(items);
        } catch (again) {
          if (isTransient(again)) throw again;
        }
      }
      return settleEach(items, writeAlone, opts.exclusiveKeyOf);
    }
  }, opts);

  const inFlight = new Map<string, Promise<R>>();
  return (item: T) => {
    const key = opts.keyOf(item);
    const running = inFlight.get(key);
    if (running) return running;
    const p = commit(item).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
    return p;
  };
}

/**
 * Writes each item on its own, a few at a time, each with its own outcome. Items sharing an exclusive key (see
 * GroupCommitOptions) go one after another: written side by side they would only fail each other's precondition.
 */
export async function settleEach<T, R>(items: T[], write: (item: T) => Promise<R>, exclusiveKeyOf?: (item: T) => string | undefined): Promise<Settled<R>[]> {
  const results: Settled<R>[] = new Array(items.length);
  const chains: number[][] = [];
  const chainOf = new Map<string, number[]>();
  items.forEach((item, i) => {
    const key = exclusiveKeyOf?.(item);
    const chain = key === undefined ? undefined : chainOf.get(key);
    if (chain) return void chain.push(i);
    chains.push([i]);
    if (key !== undefined) chainOf.set(key, chains[chains.length - 1]!);
  });
  let next = 0;
  const worker = async () => {
    while (next < chains.length) {
      for (const i of chains[next++]!) {
        try {
          results[i] = { status: 'fulfilled', value: await write(items[i]!) };
        } catch (reason) {
          results[i] = { status: 'rejected', reason };
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(aloneConcurrency, chains.length) }, worker));
  return results;
}

/** ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, NOT_FOUND (a document removed by TTL meanwhile): read again. */
export function isConflict(err: unknown): boolean {
  const code = grpcCode(err);
  return code === 6 || code === 9 || code === 10 || code === 5;
}

/** CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE: the same request may succeed later. */
function isTransient(err: unknown): boolean {
  const code = grpcCode(err);
  return code === 1 || code === 4 || code === 8 || code === 13 || code === 14;
}

function grpcCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}
