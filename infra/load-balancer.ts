import type { Cloudfunctions2Function } from '@cdktf/provider-google/lib/cloudfunctions2-function';
import { ComputeBackendService } from '@cdktf/provider-google/lib/compute-backend-service';
import { ComputeGlobalAddress } from '@cdktf/provider-google/lib/compute-global-address';
import { ComputeGlobalForwardingRule } from '@cdktf/provider-google/lib/compute-global-forwarding-rule';
import { ComputeManagedSslCertificate } from '@cdktf/provider-google/lib/compute-managed-ssl-certificate';
import { ComputeRegionNetworkEndpointGroup } from '@cdktf/provider-google/lib/compute-region-network-endpoint-group';
import { ComputeTargetHttpProxy } from '@cdktf/provider-google/lib/compute-target-http-proxy';
import { ComputeTargetHttpsProxy } from '@cdktf/provider-google/lib/compute-target-https-proxy';
import { ComputeUrlMap } from '@cdktf/provider-google/lib/compute-url-map';
import type { Construct } from 'constructs';
import { functionNames, localPaths } from '../shared/names';
import { functionKeys, kebab, snake, type FunctionKey } from './entries';
import type { StackContext } from './stack';

/**
 * The header the tracking functions read for the visitor's country (functions/tracking/http.ts), set by the URL map
 * from the load balancer's geo lookup, replacing any the client sent: a visitor must not choose its own country.
 */
export const clientRegionHeader = { headerName: 'X-Client-Region', headerValue: '{client_region}', replace: true } as const;

/** The public functions the load balancer serves, each under its local gateway path (shared/names.ts localPaths). */
export const servedPaths = {
  click: localPaths.click,
  postback: localPaths.postback,
  pixel: localPaths.pixel,
  api: localPaths.api,
  stripeWebhook: localPaths.stripeWebhook,
} as const satisfies Partial<Record<FunctionKey, string>>;
type Served = keyof typeof servedPaths;

/**
 * URL map patterns matching what the local gateway matches for a prefix (scripts/local/gateway.ts): a prefix ending
 * in '/' matches everything under it; otherwise the path itself and everything under `path/`.
 */
export function pathPatterns(prefix: string): string[] {
  return prefix.endsWith('/') ? [`${prefix}*`] : [prefix, `${prefix}/*`];
}

/**
 * The external HTTPS load balancer (global, EXTERNAL_MANAGED) that serves the platform on the tracking domain: a
 * static IP, a Google-managed certificate, one serverless NEG and backend service per public function, and a URL map
 * routing the same paths as the local gateway, so one base URL serves what `npm start` serves locally: tracking
 * links, the postback and pixel, the API and the Stripe webhook. Every address the API hands out (PUBLIC_BASE_URL)
 * is on this domain. Port 80 redirects to HTTPS (308, keeping the method and body). The URL map sets X-Client-Region
 * from the load balancer's geo lookup, over any the client sent, and strips a client-sent CF-IPCountry, which the
 * click function would otherwise trust (it is only meaningful behind Cloudflare). Each function is reached through a serverless NEG of the Cloud
 * Run type: a 2nd-gen function is a Cloud Run service of the same name (the Cloud Functions type serves 1st gen only).
 */
export function trackingLoadBalancer(scope: Construct, c: StackContext, domain: string, functions: Record<FunctionKey, Cloudfunctions2Function>): { address: string } {
  const dependsOn = [c.apis.compute!];
  const ip = new ComputeGlobalAddress(scope, 'lb_ip', { name: 'abp-tracking', dependsOn });
  const cert = new ComputeManagedSslCertificate(scope, 'lb_certificate', { name: 'abp-tracking', managed: { domains: [domain] }, dependsOn });

  const backends = {} as Record<Served, ComputeBackendService>;
  for (const key of Object.keys(servedPaths) as Served[]) {
    const spec = c.specs[key];
    if (spec.trigger.kind !== 'http' || spec.trigger.access !== 'public') throw new Error(`${key} is served on the tracking domain, so it must be a public HTTP function (infra/functions.ts)`);
    const id = snake(key);
    const neg = new ComputeRegionNetworkEndpointGroup(scope, `lb_neg_${id}`, {
      name: `abp-${kebab(functionNames[key])}`,
      region: c.region,
      networkEndpointType: 'SERVERLESS',
      cloudRun: { service: functions[key].name },
      dependsOn,
    });
    backends[key] = new ComputeBackendService(scope, `lb_backend_${id}`, {
      name: `abp-${kebab(functionNames[key])}`,
      loadBalancingScheme: 'EXTERNAL_MANAGED',
      protocol: 'HTTPS',
      backend: [{ group: neg.id }],
      // A load balancer log entry carries the client's address (httpRequest.remoteIp), and a visitor's raw IP is
      // never stored (shared/domain/visitor.ts), so the tracking backends log nothing; disabled rather than left
      // unset, so that an apply turns off logging enabled earlier. The API's and the Stripe webhook's callers are
      // operators, advertisers and Stripe, whose addresses their Cloud Run request logs hold anyway; a 1% sample
      // there shows what only the load balancer sees (a backend it could not reach, a request it refused).
      logConfig: c.specs[key].tracking ? { enable: false } : { enable: true, sampleRate: 0.01 },
    });
  }
  for (const key of functionKeys) {
    const { trigger } = c.specs[key];
    if (trigger.kind === 'http' && trigger.access === 'public' && !(key in servedPaths)) throw new Error(`${key} is public but has no path on the tracking domain (servedPaths)`);
  }

  const urlMap = new ComputeUrlMap(scope, 'lb_url_map', {
    name: 'abp-tracking',
    defaultService: backends.click.id,
    headerAction: { requestHeadersToRemove: ['CF-IPCountry'], requestHeadersToAdd: [clientRegionHeader] },
    hostRule: [{ hosts: [domain], pathMatcher: 'tracking' }],
    pathMatcher: [
      {
        name: 'tracking',
        defaultService: backends.click.id,
        pathRule: (Object.entries(servedPaths) as [Served, string][]).map(([key, prefix]) => ({ paths: pathPatterns(prefix), service: backends[key].id })),
      },
    ],
  });
  const https = new ComputeTargetHttpsProxy(scope, 'lb_https_proxy', { name: 'abp-tracking', urlMap: urlMap.id, sslCertificates: [cert.id] });
  new ComputeGlobalForwardingRule(scope, 'lb_https', {
    name: 'abp-tracking-https', target: https.id, ipAddress: ip.address, portRange: '443', ipProtocol: 'TCP', loadBalancingScheme: 'EXTERNAL_MANAGED',
  });

  const redirect = new ComputeUrlMap(scope, 'lb_http_redirect', {
    name: 'abp-tracking-http-redirect',
    // 308, not 301: a client may turn a 301 into a GET, and a postback POSTed to http:// would arrive without its body.
    defaultUrlRedirect: { httpsRedirect: true, stripQuery: false, redirectResponseCode: 'PERMANENT_REDIRECT' },
    dependsOn,
  });
  const http = new ComputeTargetHttpProxy(scope, 'lb_http_proxy', { name: 'abp-tracking-http', urlMap: redirect.id });
  new ComputeGlobalForwardingRule(scope, 'lb_http', {
    name: 'abp-tracking-http', target: http.id, ipAddress: ip.address, portRange: '80', ipProtocol: 'TCP', loadBalancingScheme: 'EXTERNAL_MANAGED',
  });
  return { address: ip.address };
}
