import type { Route } from '../router';
import { affiliateRoutes } from './affiliates';
import { apiKeyRoutes } from './api-keys';
import { auditRoutes } from './audit-log';
import { campaignRoutes } from './campaigns';
import { linkRoutes } from './links';
import { memberRoutes } from './members';
import { moneyRoutes } from './money';
import { orgRoutes } from './orgs';
import { postbackConfigRoutes } from './postback-config';
import { reportRoutes } from './reports';
import { trackingRoutes } from './tracking';

export const apiRoutes: Route[] = [
  ...orgRoutes,
  ...memberRoutes,
  ...apiKeyRoutes,
  ...campaignRoutes,
  ...affiliateRoutes,
  ...linkRoutes,
  ...postbackConfigRoutes,
  ...auditRoutes,
  ...trackingRoutes,
  ...reportRoutes,
  ...moneyRoutes,
];
