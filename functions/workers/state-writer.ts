import * as functions from '@google-cloud/functions-framework';
import { functionNames } from '../../shared/names';
import { publishTrackingEvent } from '../adapters/pubsub';
import { applyClick } from '../services/click-state';
import { markVersionDue } from '../services/conversion-analytics';
import { applyPostback } from '../services/ingest-state';
import { OrgScope } from '../services/tenancy';
import { decodeTrackingEvent } from './decode';
import { answerFrameworkErrors } from '../framework-errors';

/** Operational state in Firestore. Conversion events are this worker's own output, for analytics. */
export async function writeState(ce: functions.CloudEvent<unknown>): Promise<void> {
  const event = decodeTrackingEvent(ce);
  if (event.type === 'click') {
    await applyClick(event);
  } else if (event.type === 'postback') {
    const conversion = await applyPostback(event);
    if (!conversion) return; // another request's event books it (the receipt names that one)
    // Published on every delivery, not just the first: if we crashed after booking and before publishing,
    // the redelivery still gets it out, and analytics ignores the copy it already has. A failed publish also
    // marks the version due, for the commissions job's sweep: the redeliveries may all fail as well.
    try {
      await publishTrackingEvent(conversion);
    } catch (err) {
      await markVersionDue(OrgScope.system(event.orgId, 'state-writer'), conversion.conversionId ?? conversion.eventId, conversion.eventId).catch(() => undefined);
      throw err;
    }
  }
}

answerFrameworkErrors();
functions.cloudEvent(functionNames.stateWriter, writeState);
