import assert from 'node:assert/strict';
import { create as createDomain } from 'node:domain';
import { describe, it } from 'node:test';
import { groupCommit, groupCommitCallbacks } from '../shared/group-commit';
import { groupedWrites, settleEach } from '../functions/services/grouped-writes';

/** The workers' group commit: items that arrive together are written together, each caller gets its own answer. */
function recorder(opts: { maxItems: number; maxConcurrent: number; exclusiveKeyOf?: (n: number) => string | undefined }, fail: (n: number) => boolean = () => false) {
  const groups: number[][] = [];
  let running = 0;
  let mostRunning = 0;
  let release: (() => void)[] = [];
  const add = groupCommit<number, string>(async (items) => {
    groups.push(items);
    mostRunning = Math.max(mostRunning, ++running);
    await new Promise<void>((r) => release.push(r));
    running--;
    return items.map((n) => (fail(n) ? { status: 'rejected', reason: new Error(`item ${n} failed`) } : { status: 'fulfilled', value: `ok ${n}` }));
  }, opts);
  const releaseAll = () => {
    const r = release;
    release = [];
    r.forEach((f) => f());
  };
  return { add, groups, releaseAll, mostRunning: () => mostRunning };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('group commit', () => {
  it('sends a lone item at once, and what arrives while the slots are busy as one group', async () => {
    const g = recorder({ maxItems: 100, maxConcurrent: 1 });
    const first = g.add(1);
    await tick();
    assert.deepEqual(g.groups, [[1]]);
    const rest = [2, 3, 4].map((n) => g.add(n));
    await tick();
    assert.deepEqual(g.groups, [[1]], 'waits for the slot');
    g.releaseAll();
    assert.equal(await first, 'ok 1');
    await tick();
    assert.deepEqual(g.groups, [[1], [2, 3, 4]]);
    g.releaseAll();
    assert.deepEqual(await Promise.all(rest), ['ok 2', 'ok 3', 'ok 4']);
  });

  it('keeps groups within maxItems and commits at most maxConcurrent at once', async () => {
    const g = recorder({ maxItems: 3, maxConcurrent: 2 });
    const all = Array.from({ length: 10 }, (_, i) => g.add(i));
    await tick();
    assert.deepEqual(g.groups, [[0, 1, 2], [3, 4, 5]]);
    while (g.groups.flat().length < 10) {
      g.releaseAll();
      await tick();
    }
    g.releaseAll();
    await Promise.all(all);
    assert.deepEqual(g.groups, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]);
    assert.equal(g.mostRunning(), 2);
  });

  it('never has two groups in flight holding one exclusive key, and sends the other items meanwhile', async () => {
    // Items 0-5 write document "v" (a visitor's, say); 10 and 11 write nothing shared.
    const g = recorder({ maxItems: 3, maxConcurrent: 3, exclusiveKeyOf: (n) => (n < 10 ? 'v' : undefined) });
    const all = [0, 1, 10, 2, 3, 11, 4, 5].map((n) => g.add(n));
    await tick();
    // The first group holds "v": the rest of "v" waits, though slots are free, and 11 goes out on its own.
    assert.deepEqual(g.groups, [[0, 1, 10], [11]]);
    g.releaseAll();
    await tick();
    assert.deepEqual(g.groups.slice(2), [[2, 3, 4]]);
    g.releaseAll();
    await tick();
    assert.deepEqual(g.groups.slice(3), [[5]]);
    g.releaseAll();
    assert.deepEqual(await Promise.all(all), ['ok 0', 'ok 1', 'ok 10', 'ok 2', 'ok 3', 'ok 11', 'ok 4', 'ok 5']);
  });

  it('goes on with items of other keys while one key waits for its group', async () => {
    const g = recorder({ maxItems: 2, maxConcurrent: 2, exclusiveKeyOf: (n) => (n < 10 ? 'v' : `w${n}`) });
    const all = [0, 1, 2, 10, 11].map((n) => g.add(n));
    await tick();
    // [0, 1] holds "v"; 2 waits for it, and 10 and 11, which need nothing held, fill the second slot.
    assert.deepEqual(g.groups, [[0, 1], [10, 11]]);
    g.releaseAll();
    await tick();
    assert.deepEqual(g.groups.slice(2), [[2]]);
    g.releaseAll();
    await Promise.all(all);
  });

  it('fails only the items that failed, and a thrown commit fails its whole group', async () => {
    const g = recorder({ maxItems: 10, maxConcurrent: 1 }, (n) => n === 2);
    const answers = Promise.allSettled([1, 2, 3].map((n) => g.add(n)));
    await tick();
    g.releaseAll();
    assert.deepEqual((await answers).map((a) => a.status), ['fulfilled', 'rejected', 'fulfilled']);

    const broken = groupCommit<number, number>(async () => {
      throw new Error('unavailable');
    }, { maxItems: 10, maxConcurrent: 1 });
    const settled = await Promise.allSettled([broken(1), broken(2)]);
    assert.deepEqual(settled.map((s) => (s.status === 'rejected' ? (s.reason as Error).message : 'ok')), ['unavailable', 'unavailable']);
    assert.equal(await broken(3).catch(() => 'still serving'), 'still serving');
  });
});

describe('group commit, callback form (the click path)', () => {
  it('settles every item of a group even when one settle callback throws, and keeps serving', async () => {
    const submit = groupCommitCallbacks<number, number>((items, finish) => setImmediate(() => finish(items.map((n) => ({ status: 'fulfilled', value: n * 2 })))), {
      maxItems: 10,
      maxConcurrent: 1,
    });
    const got: number[] = [];
    const logged: unknown[] = [];
    const error = console.error;
    console.error = (...args: unknown[]) => void logged.push(args[0]);
    try {
      await new Promise<void>((done) => {
        submit(1, (r) => got.push(r.status === 'fulfilled' ? r.value : -1));
        submit(2, () => {
          throw new Error('a broken caller');
        });
        submit(3, (r) => {
          got.push(r.status === 'fulfilled' ? r.value : -1);
          done();
        });
      });
    } finally {
      console.error = error;
    }
    assert.deepEqual(got, [2, 6]);
    assert.match(String(logged[0]), /a broken caller/);
    const next = await new Promise((done) => submit(4, done));
    assert.deepEqual(next, { status: 'fulfilled', value: 8 });
  });

  it('fails the whole group when commit throws before it could finish, and ignores a second finish', async () => {
    let calls = 0;
    const submit = groupCommitCallbacks<number, number>((items, finish) => {
      calls++;
      if (items.includes(0)) throw new Error('cannot reach Pub/Sub');
      finish(items.map((n) => ({ status: 'fulfilled', value: n })));
      finish(items.map(() => ({ status: 'rejected', reason: new Error('late') })));
    }, { maxItems: 10, maxConcurrent: 1 });
    const settle = (n: number) => new Promise<PromiseSettledResult<number>>((done) => submit(n, done));
    const failed = await Promise.all([settle(0), settle(1)]);
    assert.deepEqual(failed.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.value)), ['cannot reach Pub/Sub', 'cannot reach Pub/Sub']);
    assert.deepEqual(await settle(5), { status: 'fulfilled', value: 5 });
    assert.equal(calls, 2);
  });

  it('sends a group, and starts its deadline timer, outside the domain of the request whose turn sent it', async () => {
    // The Functions Framework runs each request in a domain that answers that request with a 500 on an error:
    // a group serves many requests, so its I/O must not be bound to the first one's.
    const domains: unknown[] = [];
    const submit = groupCommitCallbacks<number, number>((items, finish) => {
      domains.push((process as { domain?: unknown }).domain);
      if (items[0] === 7) setImmediate(() => finish(items.map((n) => ({ status: 'fulfilled', value: n }))));
    }, { maxItems: 10, maxConcurrent: 1, timeoutMs: 50 });
    const request = createDomain();
    const inRequest = <T>(f: (done: (r: T) => void) => void) => new Promise<T>((done) => request.run(() => f(done)));
    assert.deepEqual(await inRequest<PromiseSettledResult<number>>((done) => submit(7, done)), { status: 'fulfilled', value: 7 });
    // A group that never finishes is failed by its timer, whose callback must not run in the request's domain either.
    const timedOut = await inRequest<unknown>((done) => submit(8, () => done((process as { domain?: unknown }).domain)));
    assert.deepEqual(domains, [undefined, undefined]);
    assert.equal(timedOut, undefined);
  });
});

describe('group commit with a deadline', () => {
  it('fails a group that never finishes, frees its slot for the next one, and ignores its late result', async () => {
    const finishers: ((results: PromiseSettledResult<number>[]) => void)[] = [];
    const submit = groupCommitCallbacks<number, number>((items, finish) => {
      if (items.includes(1)) finishers.push(finish); // the stuck request
      else finish(items.map((n) => ({ status: 'fulfilled', value: n })));
    }, { maxItems: 10, maxConcurrent: 1, timeoutMs: 50 });
    const settle = (n: number) => new Promise<PromiseSettledResult<number>>((done) => submit(n, done));
    const stuck = settle(1);
    await tick(); // 1 goes out alone; 2 waits for the slot
    const behind = settle(2);
    const r1 = await stuck;
    assert.equal(r1.status, 'rejected');
    assert.match(String((r1 as PromiseRejectedResult).reason), /did not finish within 50 ms/);
    assert.deepEqual(await behind, { status: 'fulfilled', value: 2 });
    finishers[0]!([{ status: 'fulfilled', value: 1 }]); // late: nobody hears it, nothing breaks
    assert.deepEqual(await settle(3), { status: 'fulfilled', value: 3 });
  });

  it('keeps a timed-out group\'s exclusive keys until its commit really ends', async () => {
    const finishers: ((results: PromiseSettledResult<number>[]) => void)[] = [];
    const sent: number[][] = [];
    const submit = groupCommitCallbacks<number, number>((items, finish) => {
      sent.push(items);
      if (items.includes(1)) finishers.push(finish); // still writing "v" long after its callers gave up
      else finish(items.map((n) => ({ status: 'fulfilled', value: n })));
    }, { maxItems: 10, maxConcurrent: 2, timeoutMs: 50, exclusiveKeyOf: (n) => (n < 10 ? 'v' : undefined) });
    const settle = (n: number) => new Promise<PromiseSettledResult<number>>((done) => submit(n, done));
    assert.equal((await settle(1)).status, 'rejected');
    const sameKey = settle(2);
    assert.deepEqual(await settle(10), { status: 'fulfilled', value: 10 }, 'other items go on');
    assert.deepEqual(sent, [[1], [10]], '2 waits: the stuck commit may still write "v"');
    finishers[0]!([{ status: 'fulfilled', value: 1 }]);
    assert.deepEqual(await sameKey, { status: 'fulfilled', value: 2 });
  });
});

describe('grouped writes (the workers\' Firestore groups)', () => {
  /** A store stand-in that answers as Firestore's commit does: per group, or with a gRPC code. */
  function writes(groupAnswers: ((items: string[]) => string[] | { code?: number })[]) {
    const groups: string[][] = [];
    const alone: string[] = [];
    let call = 0;
    const write = groupedWrites<string, string>(
      async (items) => {
        groups.push(items);
        const answer = (groupAnswers[call++] ?? ((xs: string[]) => xs.map((x) => `group:${x}`)))(items);
        if (!Array.isArray(answer)) throw Object.assign(new Error(`code ${answer.code}`), answer);
        return answer.map((value) => ({ status: 'fulfilled', value }));
      },
      async (item) => {
        alone.push(item);
        if (item === 'poison') throw new Error('poison refused');
        return `alone:${item}`;
      },
      { maxItems: 100, maxConcurrent: 1, keyOf: (item) => item },
    );
    return { write, groups, alone };
  }
  const settle = (ps: Promise<string>[]) => Promise.allSettled(ps).then((rs) => rs.map((r) => (r.status === 'fulfilled' ? r.value : `failed: ${(r.reason as Error).message}`)));

  it('reads and tries a conflicting group once more before writing its items one by one', async () => {
    const once = writes([() => ({ code: 10 })]);
    assert.deepEqual(await settle(['a', 'b'].map(once.write)), ['group:a', 'group:b']);
    assert.deepEqual([once.groups, once.alone], [[['a', 'b'], ['a', 'b']], []]);
    const twice = writes([() => ({ code: 6 }), () => ({ code: 9 })]);
    assert.deepEqual(await settle(['a', 'b'].map(twice.write)), ['alone:a', 'alone:b']);
  });

  it('writes items sharing an exclusive key one after another when it writes them alone, the others side by side', async () => {
    let running = 0;
    const runningOf = new Map<string, number>();
    const most = { any: 0, sameKey: 0 };
    const key = (x: string) => x.slice(0, 1);
    const results = await settleEach(['a1', 'a2', 'a3', 'b1', 'c1', 'a4'], async (x) => {
      most.any = Math.max(most.any, ++running);
      runningOf.set(key(x), (runningOf.get(key(x)) ?? 0) + 1);
      most.sameKey = Math.max(most.sameKey, runningOf.get(key(x))!);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      runningOf.set(key(x), runningOf.get(key(x))! - 1);
      return x;
    }, key);
    assert.deepEqual(results.map((r) => (r.status === 'fulfilled' ? r.value : 'failed')), ['a1', 'a2', 'a3', 'b1', 'c1', 'a4']);
    assert.deepEqual(most, { any: 3, sameKey: 1 });
  });

  it('splits a group refused for a lasting reason, so a poison item fails only its own write', async () => {
    const w = writes([() => ({ code: 3 })]);
    assert.deepEqual(await settle(['a', 'poison', 'b'].map(w.write)), ['alone:a', 'failed: poison refused', 'alone:b']);
    assert.deepEqual(w.groups, [['a', 'poison', 'b']]);
  });

  it('fails a group as it is on a transient error, for Pub/Sub to redeliver, without splitting it', async () => {
    const w = writes([() => ({ code: 14 })]);
    assert.deepEqual(await settle(['a', 'b'].map(w.write)), ['failed: code 14', 'failed: code 14']);
    assert.deepEqual(w.alone, []);
  });

  it('gives a repeat of an item still being written the first one\'s outcome instead of writing it again', async () => {
    const groups: string[][] = [];
    const gates: (() => void)[] = [];
    const open = () => gates.shift()!(); // the oldest group in flight finishes
    const write = groupedWrites<string, string>(
      async (items) => {
        const n = groups.push(items);
        await new Promise<void>((r) => gates.push(r));
        return items.map((x) => ({ status: 'fulfilled', value: `written ${x} in group ${n}` }));
      },
      async () => 'never alone',
      { maxItems: 100, maxConcurrent: 2, keyOf: (item) => item },
    );
    const first = write('a');
    await tick(); // the first group is in flight, held open
    const repeat = write('a');
    const other = write('b');
    await tick();
    assert.deepEqual(groups, [['a'], ['b']], 'the repeat joined no group of its own');
    open();
    await first;
    open();
    assert.deepEqual(await Promise.all([first, repeat, other]), ['written a in group 1', 'written a in group 1', 'written b in group 2']);
    const later = write('a');
    await tick();
    open();
    assert.equal(await later, 'written a in group 3', 'once settled, a later delivery is written (and found) again');
  });
});
