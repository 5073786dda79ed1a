import type { Domain } from 'node:domain';

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
export interface GroupCommitOptions<T = unknown> {
  /** The most items one commit takes (e.g. what fits in one Firestore batch). */
  maxItems: number;
  /** Groups committed at the same time. */
  maxConcurrent: number;
  /**
   * Fail a group that has not finished after this long and free its slot, so that two stuck commits (a
   * request retried for minutes) cannot hold up every later item. Its late result is ignored; the commit
   * itself may still land, which callers must tolerate (every write here is idempotent).
   */
  timeoutMs?: number;
  /**
   * The document an item writes with a precondition (a visitor's recent clicks), if any: two groups in flight
   * that hold the same one would fail each other's commit, and a flood of clicks from one visitor would then
   * fail deliveries by the hundred. An item whose key a commit still running holds waits for the next group,
   * with every other item of that key, so each key is written by one commit at a time (in this process) and a
   * burst of one key shares one. A group that timed out keeps its keys until its commit really ends.
   */
  exclusiveKeyOf?(item: T): string | undefined;
}

/** One item's outcome, in Promise.allSettled's shape: one bad item need not fail the rest of its group. */
export type Settled<R> = PromiseSettledResult<R>;

interface Waiting<T, R> {
  item: T;
  settle(result: Settled<R>): void;
  key?: string | undefined;
}

/**
 * The callback form, for the click path. There, every promise is dear: the Functions Framework runs each
 * request in a `domain`, which turns on async hooks for the whole process, and each promise then costs about
 * a microsecond more plus a destroy hook for the collector (measured: an async call and its `then` take
 * 0.04 µs outside a domain, 2.3 µs inside one). `commit` calls `finish` once with one result per item;
 * `settle` is called once per item and must not throw (an exception is logged, not passed on, so that the
 * rest of the group is still settled and the next group still goes out).
 */
export function groupCommitCallbacks<T, R>(
  commit: (items: T[], finish: (results: Settled<R>[]) => void) => void,
  opts: GroupCommitOptions<T>,
): (item: T, settle: (result: Settled<R>) => void) => void {
  let waiting: Waiting<T, R>[] = [];
  let inFlight = 0;
  let scheduled = false;
  /** Exclusive keys of commits still running (a group that timed out holds its keys until its commit ends). */
  const held = new Set<string>();

  const run = (group: Waiting<T, R>[]) => {
    let finished = false;
    let committed = false;
    let timer: NodeJS.Timeout | undefined;
    /** The commit's own end (a timeout is not one): only then may another commit write its keys. */
    const commitEnded = (results: Settled<R>[]) => {
      if (committed) return;
      committed = true;
      for (const w of group) if (w.key !== undefined) held.delete(w.key);
      if (finished) pump();
      else finish(results);
    };
    const finish = (results: Settled<R>[]) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      inFlight--;
      const broken = results.length === group.length ? undefined : new Error(`group commit returned ${results.length} results for ${group.length} items`);
      group.forEach((w, i) => {
        try {
          w.settle(broken ? { status: 'rejected', reason: broken } : results[i]!);
        } catch (err) {
          console.error(JSON.stringify({ severity: 'ERROR', message: 'group commit: a settle callback threw', error: String((err as Error)?.stack ?? err) }));
        }
      });
      pump();
    };
    // The group belongs to every caller in it, not to the request whose turn happened to send it: run it
    // outside that request's domain (the Functions Framework's per-request error trap), which also spares each
    // async resource the client creates for it (and its deadline timer) the domain's bookkeeping.
    const domain = (process as { domain?: Domain | null }).domain;
    domain?.exit();
    try {
      if (opts.timeoutMs !== undefined) {
        const timedOut = new Error(`group commit did not finish within ${opts.timeoutMs} ms`);
        // Not unref'd: it lives no longer than the commit's own I/O would, and is cleared when the group finishes.
        timer = setTimeout(() => finish(group.map(() => ({ status: 'rejected', reason: timedOut }))), opts.timeoutMs);
      }
      commit(
        group.map((w) => w.item),
        commitEnded,
      );
    } catch (err) {
      commitEnded(group.map(() => ({ status: 'rejected', reason: err })));
    } finally {
      domain?.enter();
    }
  };

  function pump(): void {
    while (inFlight < opts.maxConcurrent && waiting.length) {
      const group = held.size ? takeFree() : waiting.splice(0, opts.maxItems);
      if (!group.length) return; // every waiting item's key is held: the commit holding it pumps again as it ends
      for (const w of group) if (w.key !== undefined) held.add(w.key);
      inFlight++;
      run(group);
    }
  }

  /** The first items, in order, whose keys no group in flight holds. */
  function takeFree(): Waiting<T, R>[] {
    const group: Waiting<T, R>[] = [];
    const left: Waiting<T, R>[] = [];
    for (const w of waiting) {
      if (group.length < opts.maxItems && (w.key === undefined || !held.has(w.key))) group.push(w);
      else left.push(w);
    }
    waiting = left;
    return group;
  }

  const pumpNextTurn = () => {
    scheduled = false;
    pump();
  };

  return (item: T, settle: (result: Settled<R>) => void) => {
    waiting.push(opts.exclusiveKeyOf ? { item, settle, key: opts.exclusiveKeyOf(item) } : { item, settle });
    if (scheduled) return;
    scheduled = true;
    // Deliveries parsed in the same turn of the event loop go out together.
    setImmediate(pumpNextTurn);
  };
}

/** A function that settles a callback, as one that returns a promise (for callers off the click path). */
export function promised<T, R>(submit: (item: T, settle: (result: Settled<R>) => void) => void): (item: T) => Promise<R> {
  return (item: T) =>
    new Promise<R>((resolve, reject) =>
      submit(item, (r) => {
        if (r.status === 'fulfilled') resolve(r.value);
        else reject(r.reason);
      }),
    );
}

/** The promise form, for the workers: `commit` resolves to one result per item. */
export function groupCommit<T, R>(commit: (items: T[]) => Promise<Settled<R>[]>, opts: GroupCommitOptions<T>): (item: T) => Promise<R> {
  return promised(
    groupCommitCallbacks<T, R>((items, finish) => {
      commit(items).then(finish, (err: unknown) => finish(items.map(() => ({ status: 'rejected', reason: err }))));
    }, opts),
  );
}
