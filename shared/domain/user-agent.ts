import type { deviceKinds } from './events';

/**
 * Cheap, allocation-light classification of the visitor from its user agent: enough for reports and for
 * keeping crawlers and link previews out of billable clicks. A full UA database is not worth its cold-start
 * cost in the click function.
 */
const botPattern =
  /bot\b|bot\/|crawler|spider|crawling|slurp|facebookexternalhit|facebookcatalog|embedly|quora link preview|outbrain|pinterest\/|vkshare|w3c_validator|whatsapp|telegrambot|discordbot|slackbot|slack-imgproxy|skypeuripreview|linkedinbot|twitterbot|applebot|bingpreview|google-inspectiontool|googleother|headlesschrome|phantomjs|python-requests|python-urllib|go-http-client|java\/|okhttp|curl\/|wget\/|libwww-perl|httpclient|axios\/|node-fetch|scrapy|lighthouse|pingdom|uptimerobot|statuscake|datadog|newrelicpinger|preview/i;

export interface UserAgentInfo {
  device: (typeof deviceKinds)[number];
  os: string | null;
  browser: string | null;
  isBot: boolean;
}

export function classifyUserAgent(ua: string | undefined): UserAgentInfo {
  if (!ua) return { device: 'unknown', os: null, browser: null, isBot: true };
  const isBot = botPattern.test(ua);
  const os = /windows nt/i.test(ua) ? 'Windows'
    : /iphone|ipad|ipod/i.test(ua) ? 'iOS'
    : /android/i.test(ua) ? 'Android'
    : /mac os x|macintosh/i.test(ua) ? 'macOS'
    : /cros/i.test(ua) ? 'ChromeOS'
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
    : /ipad|tablet|kindle|silk|(android(?!.*mobile))/i.test(ua) ? 'tablet'
    : /mobi|iphone|ipod|android|windows phone/i.test(ua) ? 'mobile'
    : os ? 'desktop' : 'unknown';
  return { device, os, browser, isBot };
}
