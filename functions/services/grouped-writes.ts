import { groupCommit, type GroupCommitOptions } from '../../shared/group-commit';

/**
 * The workers' writes in groups: the deliveries a worker has in hand at once are read in one call and
 * committed in one atomic batch (one round trip instead of one transaction each), and when a group's commit
 * fails because something in it changed meanwhile, each item is written on its own, the careful way, so
 * that it sees what changed. A group whose commit Firestore refuses as invalid is split the same way: one
 * bad item must fail only its own delivery (to end in the dead-letter topic), never its neighbours'.
 */
export function groupedWrites<T, R>(
  writeGroup: (items: T[]) => Promise<R[]>,
  writeAlone: (item: T) => Promise<R>,
  opts: GroupCommitOptions,
): (item: T) => Promise<R> {
  return groupCommit<T, R>(async (items) => {
    try {
      return (await writeGroup(items)).map((value) => ({ status: 'fulfilled', value }));
    } catch (err) {
      if (!isConflict(err) && !(isInvalid(err) && items.length > 1)) throw err;
      return Promise.allSettled(items.map((item) => writeAlone(item)));
    }
  }, opts);
}

/** ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, NOT_FOUND (a document removed by TTL meanwhile): read again. */
export function isConflict(err: unknown): boolean {
  const code = grpcCode(err);
  return code === 6 || code === 9 || code === 10 || code === 5;
}

/** INVALID_ARGUMENT: the commit itself was refused (a document too large, say), whatever the timing. */
function isInvalid(err: unknown): boolean {
  return grpcCode(err) === 3;
}

function grpcCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}
