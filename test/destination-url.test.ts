import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fillMacros } from '../shared/domain/macros';
import { destinationUrl } from '../shared/domain/schemas';

/** What a campaign's destination URL may be: its macros can never move a visitor to another host. */
describe('destinationUrl', () => {
  const nasty = ['evil.example', '//evil.example', 'https://evil.example/', '@evil.example', '\\\\evil.example', '"><script>', '%2F%2Fevil.example', '\r\nLocation: https://evil.example'];

  it('refuses a macro wherever a browser would read it as the scheme, credentials, host or port', () => {
    for (const template of [
      'https://{sub1}/x',
      'https:///{sub1}',
      'https:////{sub1}/x',
      'https://\t/{sub1}',
      'https:{sub1}',
      'https://{sub1}.example.com/',
      'https://shop.example.com{sub1}/',
      'https://u{sub1}@shop.example.com/',
      'https://user:{sub1}@shop.example.com/',
      'http://shop.example.com:{sub1}/',
      '{sub1}://shop.example.com/',
    ]) {
      const r = destinationUrl.safeParse(template);
      assert.equal(r.success, false, template);
    }
  });

  it('takes macros in the path, the query and the fragment, and their values never change the host', () => {
    for (const template of ['https://shop.example.com?aff={click_id}', 'https://shop.example.com#{sub1}', 'https://shop.example.com/{sub1}/p?x={click_id}&a={affiliate_id}', 'http://shop.example.com:8080/{sub2}']) {
      assert.equal(destinationUrl.safeParse(template).success, true, template);
      const host = new URL(template.replace(/\{[a-z0-9_]+\}/g, 'x')).host;
      for (const value of nasty) {
        const filled = fillMacros(template, { click_id: value, sub1: value, sub2: value, affiliate_id: value });
        assert.equal(new URL(filled).host, host, `${template} with ${JSON.stringify(value)}`);
      }
    }
  });

  it('says what is wrong', () => {
    const r = destinationUrl.safeParse('https:///{sub1}');
    assert.equal(r.success, false);
    assert.match(r.error!.issues[0]!.message, /macros may only fill the path, query or fragment/);
    assert.match(destinationUrl.safeParse('javascript:alert(1)').error!.issues[0]!.message, /absolute http\(s\) URL/);
  });
});
