import type { deviceKinds } from './events';

/**
 * Cheap, allocation-light classification of the visitor from its user agent: enough for reports and for
 * keeping crawlers and link previews out of billable clicks. A full UA database is not worth its cold-start
 * cost in the click function.
 */
// `(?<!cu)bot\b`: Cubot phones name themselves `CUBOT X30`. `pinterest/0.`: Pinterest's crawler, not its in-app
// browser (`[Pinterest/iOS]`), whose clicks are people's. Fediverse servers (Mastodon, Pleroma, Misskey, Akkoma)
// and Bluesky's card service each fetch a shared link's preview themselves, so one post brings hundreds. Microsoft
// Office and Outlook request a link themselves (to check it, or preview it) before the browser opens it.
const botPattern =
  /(?<!cu)bot\b|bot\/|crawler|spider|crawling|slurp|facebookexternalhit|facebookcatalog|embedly|iframely|quora link preview|outbrain|pinterest\/0\.|vkshare|w3c_validator|whatsapp|telegrambot|discordbot|slackbot|slack-imgproxy|skypeuripreview|linkedinbot|twitterbot|applebot|bingpreview|google-inspectiontool|googleother|feedfetcher|googledocs|mediapartners-google|yeti\/|mastodon\/|http\.rb\/|pleroma|misskey\/|akkoma|cardyb|developers\.google\.com\/\+\/web\/snippet|google-pagerenderer|ms-office|msoffice|microsoft office|microsoft outlook|tumblr\/|linkcheck|headlesschrome|phantomjs|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|java\/|okhttp|curl\/|wget\/|libwww-perl|httpclient|axios\/|node-fetch|undici|^node$|postmanruntime|scrapy|lighthouse|pingdom|uptimerobot|statuscake|datadog|newrelicpinger|preview/i;

export interface UserAgentInfo {
  device: (typeof deviceKinds)[number];
  os: string | null;
  browser: string | null;
  isBot: boolean;
}

/**
 * Visitors share a few hundred user agents at a time (browser versions move slowly), and the click function
 * classifies every click's: a bounded memo saves the patterns' cost on all but the first of each. Dropped
 * whole when full, which a flood of made-up user agents can only make as slow as no memo.
 */
const memo = new Map<string, Readonly<UserAgentInfo>>();
const memoSize = 2000;
/** Real user agents are a few hundred characters; longer ones are not kept, so the memo stays small. */
const memoKeyLimit = 512;

export function classifyUserAgent(ua: string | undefined): Readonly<UserAgentInfo> {
  if (!ua) return unknownAgent;
  if (ua.length > memoKeyLimit) return Object.freeze(classify(ua));
  let info = memo.get(ua);
  if (!info) {
    if (memo.size >= memoSize) memo.clear();
    info = Object.freeze(classify(ua));
    memo.set(ua, info);
  }
  return info;
}

const unknownAgent: Readonly<UserAgentInfo> = Object.freeze({ device: 'unknown', os: null, browser: null, isBot: true });

function classify(ua: string): UserAgentInfo {
  const isBot = botPattern.test(ua);
  const os = /windows nt/i.test(ua) ? 'Windows'
    : /iphone|ipad|ipod/i.test(ua) ? 'iOS'
    : /android/i.test(ua) ? 'Android'
    : /mac os x|macintosh/i.test(ua) ? 'macOS'
    : /\bcros\b/i.test(ua) ? 'ChromeOS'
    : /linux/i.test(ua) ? 'Linux'
    : null;
  const browser = /edg\//i.test(ua) ? 'Edge'
    : /opr\/|opera/i.test(ua) ? 'Opera'
    : /samsungbrowser/i.test(ua) ? 'Samsung Internet'
    : /firefox|fxios/i.test(ua) ? 'Firefox'
    : /chrome|crios/i.test(ua) ? 'Chrome'
    : /safari/i.test(ua) ? 'Safari'
    : null;
  const device = isBot ? 'bot'
    // Android with no `Mobile` anywhere: an app may append its own Android token after the browser's Mobile.
    : /ipad|tablet|kindle|silk|^(?!.*mobile).*android/i.test(ua) ? 'tablet'
    : /mobi|iphone|ipod|android|windows phone/i.test(ua) ? 'mobile'
    : os ? 'desktop' : 'unknown';
  return { device, os, browser, isBot };
}
