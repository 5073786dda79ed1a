// Registers every function with the Functions Framework. Production deploys each entry point from its own
// bundle (see infra/); the local stack and the tests load them all from here.
import './api';
import './tracking/click';
import './tracking/postback';
import './tracking/pixel';
import './workers/state-writer';
import './workers/analytics-writer';
import './jobs/commissions';
import './jobs/payouts';
import './webhooks/stripe';
