import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capPeriod, cappedWindows, capsBroken, clickCapReached, clickCapsOf } from '../shared/domain/caps';

describe('campaign caps (pure rules)', () => {
  it('counts a conversion in its UTC day and month', () => {
    assert.equal(capPeriod('daily', '2026-11-30T23:59:59.999Z'), '2026-11-30');
    assert.equal(capPeriod('monthly', '2026-12-01T00:00:00.000Z'), '2026-12');
  });

  it('admits a conversion up to the cap and names each cap the next one would pass', () => {
    const caps = { daily: { conversions: 3 }, monthly: { payout: 1000 } };
    assert.deepEqual(cappedWindows(caps), ['daily', 'monthly']);
    assert.deepEqual(capsBroken(caps, { daily: { conversions: 2, payout: 600 }, monthly: { conversions: 2, payout: 600 } }, 400), [], 'the third sale fits both caps exactly');
    assert.deepEqual(capsBroken(caps, { daily: { conversions: 3, payout: 600 }, monthly: { conversions: 3, payout: 600 } }, 400), ['daily_conversion_cap']);
    assert.deepEqual(capsBroken(caps, { daily: { conversions: 2, payout: 601 }, monthly: { conversions: 2, payout: 601 } }, 400), ['monthly_payout_cap'], 'a payout is never split');
    assert.deepEqual(capsBroken(caps, {}, 1001), ['monthly_payout_cap'], 'nothing booked yet: the sale alone is over the payout cap');
  });

  it('leaves a campaign without conversion caps alone, whatever its click caps', () => {
    assert.deepEqual(cappedWindows({ daily: { clicks: 10 } }), []);
    assert.deepEqual(cappedWindows(undefined), []);
    assert.deepEqual(capsBroken({ daily: { clicks: 10 } }, {}, 5000), []);
  });

  it('reaches a click cap when the day or the month has had its clicks', () => {
    assert.equal(clickCapsOf({ daily: { conversions: 1 } }), undefined);
    const caps = clickCapsOf({ daily: { clicks: 100 }, monthly: { clicks: 1000 } })!;
    assert.equal(clickCapReached(caps, { daily: 99, monthly: 500 }), false);
    assert.equal(clickCapReached(caps, { daily: 100, monthly: 500 }), true);
    assert.equal(clickCapReached(caps, { daily: 0, monthly: 1000 }), true);
  });
});
