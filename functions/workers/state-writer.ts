import * as functions from '@google-cloud/functions-framework';
import { functionNames } from '../../shared/names';
import { publishTrackingEvent } from '../adapters/pubsub';
import { applyClick } from '../services/click-state';
import { applyPostback } from '../services/ingest-state';
import { decodeTrackingEvent } from './decode';
import { answerFrameworkErrors } from '../framework-errors';

/** Operational state in Firestore. Conversion events are this worker's own output, for analytics. */
export async function writeState(ce: functions.CloudEvent<unknown>): Promise<void> {
  const event = decodeTrackingEvent(ce);
  if (event.type === 'click') {
    await applyClick(event);
  } else if (event.type === 'postback') {
    const conversion = await applyPostback(event);
    // Published on every delivery, not just the first: if we crashed after booking and before publishing,
    // the redelivery still gets it out, and analytics ignores the copy it already has.
    await publishTrackingEvent(conversion);
  }
}

answerFrameworkErrors();
functions.cloudEvent(functionNames.stateWriter, writeState);
