import type { DatabaseFacts, SchemaObjects } from './engine.js';

/** How many differing objects a verify report names before it says "and N more". */
const NAMED_AT_MOST = 10;

/**
 * The objects that differ between the schema a backup recorded and the one a restore produced:
 * missing, unexpected, or with another definition. Empty when either side has no per-object
 * description (artifacts of older versions), in which case only the fingerprints can be compared.
 */
export function schemaObjectDifferences(recorded: SchemaObjects | undefined, restored: SchemaObjects | undefined): string[] {
  if (!recorded || !restored) return [];
  const out: string[] = [];
  for (const [name, hash] of Object.entries(recorded)) {
    if (!(name in restored)) out.push(`${name} is missing`);
    else if (restored[name] !== hash) out.push(`${name} is defined differently`);
  }
  for (const name of Object.keys(restored)) if (!(name in recorded)) out.push(`${name} was not in the backup`);
  return out.sort();
}

/** One sentence for verify's schema check: which objects differ, or the two fingerprints when that is all there is. */
export function describeSchemaDifference(recorded: { schemaFingerprint: string; schemaObjects?: SchemaObjects }, restored: DatabaseFacts): string {
  const named = schemaObjectDifferences(recorded.schemaObjects, restored.schemaObjects);
  if (named.length === 0) {
    return `schema fingerprint ${restored.schemaFingerprint.slice(0, 12)}… differs from the recorded ${recorded.schemaFingerprint.slice(0, 12)}…`;
  }
  const more = named.length > NAMED_AT_MOST ? `, and ${named.length - NAMED_AT_MOST} more` : '';
  return `the restored schema differs from the backup's: ${named.slice(0, NAMED_AT_MOST).join('; ')}${more}`;
}
