import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyUserAgent } from '../shared/domain/user-agent';

/** What reports group clicks by, and what keeps crawlers and link previews out of billable clicks. */
describe('classifyUserAgent', () => {
  it('tells people on desktops, phones and tablets from crawlers and previews, the same way every time', () => {
    const cases: [string | undefined, { device: string; os: string | null; browser: string | null; isBot: boolean }][] = [
      ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36', { device: 'desktop', os: 'Windows', browser: 'Chrome', isBot: false }],
      ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1', { device: 'mobile', os: 'iOS', browser: 'Safari', isBot: false }],
      ['Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36', { device: 'tablet', os: 'Android', browser: 'Chrome', isBot: false }],
      ['facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)', { device: 'bot', os: null, browser: null, isBot: true }],
      ['Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)', { device: 'bot', os: null, browser: null, isBot: true }],
      [undefined, { device: 'unknown', os: null, browser: null, isBot: true }],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [ua, expected] of cases) assert.deepEqual({ ...classifyUserAgent(ua) }, expected, `${ua} (round ${round + 1})`);
    }
  });
});
