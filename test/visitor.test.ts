import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientIp } from '../shared/domain/visitor';

/** The visitor's address as the trusted proxies saw it: what the click's dedupe, fraud hash and prefix rest on. */
describe('clientIp', () => {
  it('takes the address the last trusted proxy appended, not what the client put before it', () => {
    assert.equal(clientIp('203.0.113.7', 1, '10.0.0.1'), '203.0.113.7');
    assert.equal(clientIp(' 203.0.113.7 ', 1, '10.0.0.1'), '203.0.113.7');
    assert.equal(clientIp('6.6.6.6, 203.0.113.7', 1, '10.0.0.1'), '203.0.113.7', 'a spoofed first entry is ignored');
    assert.equal(clientIp('6.6.6.6, 203.0.113.7, 130.211.0.1', 2, '10.0.0.1'), '203.0.113.7', 'behind the load balancer');
    assert.equal(clientIp('2001:db8::1', 1, undefined), '2001:db8::1');
  });

  it('falls back to the socket when the header is missing, not an address, or not from a trusted proxy', () => {
    assert.equal(clientIp(undefined, 1, '::ffff:198.51.100.2'), '198.51.100.2');
    assert.equal(clientIp('not-an-ip', 1, '198.51.100.2'), '198.51.100.2');
    assert.equal(clientIp('203.0.113.7', 0, '198.51.100.2'), '198.51.100.2', 'no trusted proxy: the header is the client\'s own');
  });
});
