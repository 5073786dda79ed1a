import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SigningKeys } from '../functions/adapters/supabase-jwks';

/** The project's key set as seen by an API instance, on a clock the test moves. */
function keysOf(initial: string[]) {
  let published = initial;
  let outage = false;
  let fetches = 0;
  let t = 1_000_000;
  const keys = new SigningKeys(
    async () => {
      fetches++;
      await new Promise((r) => setImmediate(r));
      if (outage) throw new Error('503 from the JWKS');
      return { keys: published.map((kid) => ({ kid, kty: 'EC', crv: 'P-256', x: 'x', y: 'y', alg: 'ES256' })) };
    },
    { maxAgeMs: 60_000, staleForMs: 600_000, now: () => t },
  );
  return {
    keys,
    publish: (kids: string[]) => (published = kids),
    down: (d: boolean) => (outage = d),
    wait: (ms: number) => (t += ms),
    fetches: () => fetches,
  };
}

describe('the signing keys an API instance holds', () => {
  it('fetches once for many tokens, and refuses an unknown key id without fetching again until the set is old', async () => {
    const p = keysOf(['k1']);
    const found = await Promise.all([p.keys.key('k1'), p.keys.key('k1'), p.keys.key('made-up-1'), p.keys.key('made-up-2')]);
    assert.deepEqual(found.map((k) => k?.kid), ['k1', 'k1', undefined, undefined]);
    assert.equal(p.fetches(), 1, 'one fetch shared by the requests that found no set');
    for (let i = 0; i < 50; i++) assert.equal(await p.keys.key(`made-up-${i}`), undefined);
    assert.equal(p.fetches(), 1, 'made-up key ids cost nothing within the max age');
    assert.deepEqual((await p.keys.key('k1'))?.key_ops, ['verify'], 'a key without key_ops is one to verify with');
  });

  it('stops listing a key rotated out once the set is older than its max age, and picks up a key rotated in', async () => {
    const p = keysOf(['old']);
    assert.ok(await p.keys.key('old'));
    p.publish(['new']);
    p.wait(59_000);
    assert.ok(await p.keys.key('old'), 'within the max age, the set as fetched');
    assert.equal(await p.keys.key('new'), undefined);
    p.wait(1_000);
    assert.equal(await p.keys.key('old'), undefined);
    assert.ok(await p.keys.key('new'));
    assert.equal(p.fetches(), 2);
  });

  it('refetches an old set in the background when asked only about tokens verified a moment ago', async () => {
    const p = keysOf(['old']);
    await p.keys.key('old');
    p.publish([]);
    p.wait(60_000);
    assert.equal(p.keys.lists('old'), true, 'answered from the set held, without waiting');
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(p.fetches(), 2);
    assert.equal(p.keys.lists('old'), false);
  });

  it('keeps verifying with a set fetched in the last 10 minutes while Supabase Auth is down, then says it is unavailable', async () => {
    const p = keysOf(['k1']);
    await p.keys.key('k1');
    p.down(true);
    p.wait(60_000);
    assert.ok(await p.keys.key('k1'), 'the set fetched a minute ago');
    assert.equal(p.fetches(), 2);
    assert.ok(await p.keys.key('k1'));
    assert.equal(p.fetches(), 2, 'not every request waits on a failing fetch: the next try is a max age later');
    p.wait(540_000);
    await assert.rejects(p.keys.key('k1'), (err: { status?: number; message: string }) => err.status === 503 && /retry/.test(err.message));
    p.down(false);
    assert.ok(await p.keys.key('k1'), 'back once Supabase Auth answers');
  });

  it('says Supabase Auth is unavailable when no set was ever fetched, or the JWKS is not a key set', async () => {
    const p = keysOf(['k1']);
    p.down(true);
    await assert.rejects(p.keys.key('k1'), { status: 503 });
    const odd = new SigningKeys(async () => ({ keys: 'none' }), { maxAgeMs: 60_000, staleForMs: 600_000 });
    await assert.rejects(odd.key('k1'), { status: 503 });
  });
});
