import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupCommit, groupCommitCallbacks } from '../shared/group-commit';

/** The workers' group commit: items that arrive together are written together, each caller gets its own answer. */
function recorder(opts: { maxItems: number; maxConcurrent: number }, fail: (n: number) => boolean = () => false) {
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
});
