import { requireInProduction } from '../../shared/config';
import { functionNames } from '../../shared/names';
import { runDueScheduledPayouts } from '../services/payouts-job';
import { registerJob } from './register';

/** Hourly: run each organisation's payout run on its scheduled day. */
requireInProduction(['STRIPE_SECRET_KEY']);
registerJob(functionNames.payoutsJob, () => runDueScheduledPayouts());
