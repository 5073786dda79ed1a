import { functionNames } from '../../shared/names';
import { approveDueConversions } from '../services/commissions-job';
import { registerJob } from './register';

/** Every 15 minutes: approve conversions whose hold period has ended. */
registerJob(functionNames.commissionsJob, () => approveDueConversions());
