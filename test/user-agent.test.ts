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
      // People in Pinterest's in-app browser, and on a Cubot phone.
      ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]', { device: 'mobile', os: 'iOS', browser: null, isBot: false }],
      ['Mozilla/5.0 (Linux; Android 12; Pixel 6 Build/SQ3A; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.0.0 Mobile Safari/537.36 [Pinterest/Android]', { device: 'mobile', os: 'Android', browser: 'Chrome', isBot: false }],
      ['Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36', { device: 'mobile', os: 'Android', browser: 'Chrome', isBot: false }],
      ['Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36', { device: 'desktop', os: 'ChromeOS', browser: 'Chrome', isBot: false }],
      // "Micro-s-oft" is no ChromeOS (its token is CrOS).
      ['Mozilla/5.0 (compatible; MSIE 9.0; Microsoft Internet Explorer; Trident/5.0)', { device: 'unknown', os: null, browser: null, isBot: false }],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [ua, expected] of cases) assert.deepEqual({ ...classifyUserAgent(ua) }, expected, `${ua} (round ${round + 1})`);
    }
  });

  it('counts the link-preview fetchers of social networks and plain HTTP clients as bots', () => {
    const previews = [
      'Pinterest/0.2 (+https://www.pinterest.com/bot.html)',
      'Mozilla/5.0 (compatible; Pinterestbot/1.0; +https://www.pinterest.com/bot.html)',
      'http.rb/5.1.1 (Mastodon/4.2.1; +https://mastodon.social/)',
      'Pleroma 2.5.2; https://pleroma.example <admin@pleroma.example>',
      'Misskey/13.14.2 (https://misskey.example)',
      'Akkoma 3.10.4; https://akkoma.example <admin@akkoma.example>',
      'Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)',
      'Iframely/1.3.1 (+https://iframely.com/docs/about)',
      'FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)',
      'Mozilla/5.0 (compatible; GoogleDocs; apps-spreadsheets; +http://docs.google.com)',
      'Mediapartners-Google',
      'Mozilla/5.0 (compatible; Yeti/1.1; +https://naver.me/spd)',
      'python-httpx/0.27.0',
      'Python/3.12 aiohttp/3.9.5',
      'PostmanRuntime/7.39.0',
      'node',
      'undici',
      'Mozilla/5.0 (Windows NT 6.1; rv:6.0) Gecko/20110814 Firefox/6.0 Google (+https://developers.google.com/+/web/snippet/)',
      'Mozilla/5.0 (compatible; Google-PageRenderer Google (+https://developers.google.com/+/web/snippet/))',
      'Microsoft Office Word 2014',
      'Mozilla/4.0 (compatible; ms-office; MSOffice 16)',
      'Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)',
      'Tumblr/14.0.835.186',
      'LinkCheck by Siteimprove.com',
    ];
    for (const ua of previews) assert.deepEqual({ ...classifyUserAgent(ua) }, { ...classifyUserAgent(ua), device: 'bot', isBot: true }, ua);
  });
});
