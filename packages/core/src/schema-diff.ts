import type { DatabaseFacts, SchemaObjects } from './engine.js';
import type { RedactableMessage } from './errors.js';

/** How many differing objects a verify report names before it says "and N more". */
const NAMED_AT_MOST = 10;

/** One schema object that differs between a backup and its restore. */
export interface SchemaObjectDifference {
  readonly name: string;
  readonly change: 'is missing' | 'is defined differently' | 'was not in the backup';
}

/**
 * The objects that differ between the schema a backup recorded and the one a restore produced:
 * missing, unexpected, or with another definition. Empty when either side has no per-object
 * description (artifacts of older versions), in which case only the fingerprints can be compared.
 */
export function schemaObjectDifferences(recorded: SchemaObjects | undefined, restored: SchemaObjects | undefined): SchemaObjectDifference[] {
  if (!recorded || !restored) return [];
  const out: SchemaObjectDifference[] = [];
  for (const [name, hash] of Object.entries(recorded)) {
    if (!(name in restored)) out.push({ name, change: 'is missing' });
    else if (restored[name] !== hash) out.push({ name, change: 'is defined differently' });
  }
  for (const name of Object.keys(restored)) if (!(name in recorded)) out.push({ name, change: 'was not in the backup' });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * One sentence for verify's schema check: which objects differ, or the two fingerprints when that
 * is all there is. Its redacted form counts the objects instead of naming them.
 */
export function describeSchemaDifference(recorded: { schemaFingerprint: string; schemaObjects?: SchemaObjects }, restored: DatabaseFacts): RedactableMessage {
  const differences = schemaObjectDifferences(recorded.schemaObjects, restored.schemaObjects);
  if (differences.length === 0) {
    const text = `schema fingerprint ${restored.schemaFingerprint.slice(0, 12)}… differs from the recorded ${recorded.schemaFingerprint.slice(0, 12)}…`;
    return { text, redacted: text };
  }
  const more = differences.length > NAMED_AT_MOST ? `, and ${differences.length - NAMED_AT_MOST} more` : '';
  const byChange = new Map<string, number>();
  for (const d of differences) byChange.set(d.change, (byChange.get(d.change) ?? 0) + 1);
  const counts = [...byChange].map(([change, n]) => `${n} ${change.replace(/^is |^was /, '')}`).join(', ');
  return {
    text: `the restored schema differs from the backup's: ${differences.slice(0, NAMED_AT_MOST).map((d) => `${d.name} ${d.change}`).join('; ')}${more}`,
    redacted: `the restored schema differs from the backup's in ${differences.length} object${differences.length === 1 ? '' : 's'} (${counts})`,
  };
}
