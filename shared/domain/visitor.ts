import { createHmac } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * Raw IP addresses are never stored. What is kept: a keyed hash (for repeat-click and fraud checks) and a
 * truncated prefix (/24 or /48), which is coarse enough not to identify a person.
 */
export function clientIp(forwardedFor: string | undefined, trustedHops: number, socketAddress: string | undefined): string | undefined {
  if (forwardedFor) {
    // The common case: one address, from Google's front end or the visitor's own request locally.
    if (trustedHops === 1 && !forwardedFor.includes(',')) {
      const only = forwardedFor.trim();
      if (isIP(only)) return only;
    }
    const hops = forwardedFor.split(',').map((s) => s.trim()).filter(Boolean);
    // Proxies we trust append to the header; anything before what they appended was sent by the client.
    const candidate = hops[Math.max(0, hops.length - trustedHops)];
    if (candidate && isIP(candidate)) return candidate;
  }
  return socketAddress?.replace(/^::ffff:/, '');
}

export function ipPrefix(ip: string | undefined): string | null {
  if (!ip) return null;
  const v = isIP(ip);
  if (v === 4) return `${ip.split('.').slice(0, 3).join('.')}.0/24`;
  if (v === 6) {
    const [head] = ip.split('::');
    const groups = (head ?? '').split(':').filter(Boolean).slice(0, 3);
    while (groups.length < 3) groups.push('0');
    return `${groups.join(':')}::/48`;
  }
  return null;
}

export function keyedHash(key: string, ...parts: (string | undefined)[]): string {
  return createHmac('sha256', key).update(parts.map((p) => p ?? '').join('\u0000')).digest('base64url').slice(0, 22);
}
