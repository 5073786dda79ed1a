import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setClickCookie } from '../functions/tracking/http';

describe('the click cookie', () => {
  const cookieFor = (secure: boolean) => {
    let value = '';
    setClickCookie({ setHeader: (_name: string, v: unknown) => ((value = String(v)), undefined as never) }, 'org_1', 'lnk.abc.def.sig', 2_592_000, secure);
    return value.split('; ');
  };

  it('reaches the pixel on the advertiser\'s checkout, another site, when served over HTTPS', () => {
    const attributes = cookieFor(true);
    // Browsers send a Lax cookie only on top-level navigations, never with an image from another site.
    assert.ok(attributes.includes('SameSite=None') && attributes.includes('Secure') && attributes.includes('HttpOnly'), attributes.join('; '));
  });

  it('stays Lax over plain HTTP, where browsers refuse SameSite=None', () => {
    const attributes = cookieFor(false);
    assert.ok(attributes.includes('SameSite=Lax') && !attributes.includes('Secure'), attributes.join('; '));
  });
});
