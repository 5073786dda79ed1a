import { Firestore } from '@google-cloud/firestore';
import { config } from '../../shared/config';

let db: Firestore | undefined;

/**
 * The process-wide Firestore client. Only the tenancy scope and the few global-lookup services import
 * this; request handlers never see it, so they cannot read another organisation's documents.
 */
export function firestore(): Firestore {
  if (!db) {
    const c = config();
    // With FIRESTORE_EMULATOR_HOST set the client talks to the emulator without credentials.
    db = new Firestore({ projectId: c.GOOGLE_CLOUD_PROJECT, ignoreUndefinedProperties: true });
  }
  return db;
}

export async function closeFirestore(): Promise<void> {
  if (db) await db.terminate();
  db = undefined;
}
