import { requireInProduction } from '../../shared/config';
import { functionNames } from '../../shared/names';
import { runDueScheduledPayouts } from '../services/payouts-job';
import { registerJob } from './register';

/** Hourly: finish payouts earlier runs left unsettled, and run each organisation's payout run on its scheduled day. */
requireInProduction(['STRIPE_SECRET_KEY']);
registerJob(functionNames.payoutsJob, () => runDueScheduledPayouts());
