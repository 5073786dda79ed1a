import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rebooks } from '../shared/domain/rebooking';

describe('re-booking a conversion under another click id', () => {
  const ours = () => true;
  const rejectedAtBooking = { status: 'rejected', clickId: 'bad', reasons: ['invalid_click_id'], approvableAt: null };

  it('re-books a conversion rejected at booking for its click id, when the new click is one we minted', () => {
    assert.equal(rebooks(rejectedAtBooking, 'good', ours), true);
    assert.equal(rebooks(rejectedAtBooking, 'good', () => false), false, 'another bad id does not take its place');
    assert.equal(rebooks(rejectedAtBooking, 'bad', ours), false, 'the same click again is a duplicate');
    assert.equal(rebooks({ ...rejectedAtBooking, reasons: ['outside_window'] }, 'good', ours), false, 'rejected for the sale, not the click');
  });

  it('never re-books a conversion a person rejected, whatever the reason reads, before or since decidedAt was recorded', () => {
    const byPerson = { status: 'rejected', clickId: 'first', reasons: ['unknown_click'], approvableAt: '2026-12-01T00:00:00.000Z' };
    assert.equal(rebooks({ ...byPerson, decidedAt: '2026-11-24T10:00:00.000Z' }, 'good', ours), false);
    assert.equal(rebooks(byPerson, 'good', ours), false, 'an older document: it had been pending, so it has an approvableAt');
  });
});

describe("a receipt's named requests", () => {
  it('names the first request accepted for each click, and keeps it when the receipt comes back to that click', async () => {
    const { namedRequest, withNamed } = await import('../shared/domain/receipt');
    let named = withNamed(undefined, 'click-a', 'in_y');
    named = withNamed(named, 'click-b', 'in_w'); // moved to another click
    named = withNamed(named, 'click-a', 'in_z'); // and back: in_y's event may still be on its way
    assert.deepEqual([namedRequest(named, 'click-a'), namedRequest(named, 'click-b'), namedRequest(named, 'click-c')], ['in_y', 'in_w', undefined]);
    // A forged click id is any text: it is only ever a hashed key.
    assert.equal(namedRequest(withNamed({}, '__name__', 'in_x'), '__name__'), 'in_x');
    assert.deepEqual(Object.keys(withNamed({}, '__name__.x/y', 'in_x')).map((k) => /^[0-9a-f]{32}$/.test(k)), [true]);
  });
});
