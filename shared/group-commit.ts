/**
 * Group commit: callers hand in one item each and get their own result, while the items that arrive
 * together are written together. A push worker handles many deliveries at once (Cloud Functions gen2 runs
 * concurrent requests per instance; locally each relay keeps up to 256 in flight), and one commit of N items
 * costs about as much as one commit of one, so this is what lets a worker keep up with hundreds of events
 * per second without lowering any guarantee: each caller still waits for the commit that holds its item.
 *
 * Nothing waits on a timer. An item goes out on the next turn of the event loop if fewer than
 * `maxConcurrent` groups are in flight; otherwise it waits for the next free slot, together with everything
 * else that arrived meanwhile. So a lone event is not delayed, and under load groups grow by themselves.
 */
export interface GroupCommitOptions {
  /** The most items one commit takes (e.g. what fits in one Firestore batch). */
  maxItems: number;
  /** Groups committed at the same time. */
  maxConcurrent: number;
}

interface Waiting<T, R> {
  item: T;
  resolve(r: R): void;
  reject(err: unknown): void;
}

/** `commit` settles each item on its own (Promise.allSettled's shape): one bad item need not fail the rest. */
export function groupCommit<T, R>(commit: (items: T[]) => Promise<PromiseSettledResult<R>[]>, opts: GroupCommitOptions): (item: T) => Promise<R> {
  const waiting: Waiting<T, R>[] = [];
  let inFlight = 0;
  let scheduled = false;

  const run = async (group: Waiting<T, R>[]) => {
    try {
      const results = await commit(group.map((w) => w.item));
      if (results.length !== group.length) throw new Error(`group commit returned ${results.length} results for ${group.length} items`);
      group.forEach((w, i) => {
        const r = results[i]!;
        if (r.status === 'fulfilled') w.resolve(r.value);
        else w.reject(r.reason);
      });
    } catch (err) {
      for (const w of group) w.reject(err);
    } finally {
      inFlight--;
      pump();
    }
  };

  function pump(): void {
    while (inFlight < opts.maxConcurrent && waiting.length) {
      inFlight++;
      void run(waiting.splice(0, opts.maxItems));
    }
  }

  return (item: T) =>
    new Promise<R>((resolve, reject) => {
      waiting.push({ item, resolve, reject });
      if (scheduled) return;
      scheduled = true;
      // Deliveries parsed in the same turn of the event loop go out together.
      setImmediate(() => {
        scheduled = false;
        pump();
      });
    });
}
