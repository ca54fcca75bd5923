import { createHash } from 'node:crypto';
import type { SchemaObjects, TableStats } from '../engine.js';
import { StrataError } from '../errors.js';

/** A restore point's complete verification facts: what verify compares a restored copy with. */
export interface CompleteFacts {
  readonly tables: readonly TableStats[];
  readonly schemaObjects?: SchemaObjects;
}

/**
 * Facts stored as changes against the parent's. A database of 5,000 tables has 5,000 checksums
 * (and as many schema objects) that no compressor shrinks; repeating them in every incremental
 * made a one-page change cost 200 KB. With a delta, the manifest's `tables` and `schemaObjects`
 * hold only what was added or changed since the parent.
 */
export interface FactsDelta {
  /** {@link factsDigest} of the parent's complete facts: resolving against other facts is refused. */
  readonly parentDigest: string;
  /** {@link factsDigest} of this restore point's complete facts, checked after resolving. */
  readonly digest: string;
  /** Tables the parent has and this restore point does not. */
  readonly removedTables: readonly string[];
  /** Schema object keys the parent has and this restore point does not. */
  readonly removedObjects: readonly string[];
  /** Complete totals, so listings need no resolving. */
  readonly tableCount: number;
  readonly rowCount: number;
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * SHA-256 (hex) of complete facts in a canonical form: tables and objects sorted by name, since
 * verify compares them by name and a resolved list keeps the parent's order with new tables last.
 */
export function factsDigest(facts: CompleteFacts): string {
  const objects = facts.schemaObjects ? Object.entries(facts.schemaObjects).sort(([a], [b]) => byName(a, b)) : null;
  const tables = facts.tables.map((t) => [t.name, t.rows, t.checksum]).sort(([a], [b]) => byName(a as string, b as string));
  return createHash('sha256').update(JSON.stringify({ tables, objects })).digest('hex');
}

/** The catalog's counts of a set of table facts: tables and rows, without the entries that are not tables. */
export function countTables(tables: readonly TableStats[], nonTableFacts: readonly string[] = []): { tableCount: number; rowCount: number } {
  const besides = new Set(nonTableFacts);
  const real = tables.filter((t) => !besides.has(t.name));
  return { tableCount: real.length, rowCount: real.reduce((sum, t) => sum + t.rows, 0) };
}

/**
 * The description of `current` as changes against `parent`, or undefined when only the complete
 * facts describe it (schema objects on one side only, or facts a delta would not reproduce).
 */
export function deltaFacts(current: CompleteFacts, parent: CompleteFacts, nonTableFacts: readonly string[] = []): { tables: TableStats[]; schemaObjects?: SchemaObjects; delta: FactsDelta } | undefined {
  if ((current.schemaObjects === undefined) !== (parent.schemaObjects === undefined)) return undefined;
  const before = new Map(parent.tables.map((t) => [t.name, t]));
  const now = new Set(current.tables.map((t) => t.name));
  const tables = current.tables.filter((t) => {
    const old = before.get(t.name);
    return !old || old.rows !== t.rows || old.checksum !== t.checksum;
  });
  const objects: Record<string, string> = {};
  const removedObjects: string[] = [];
  if (current.schemaObjects && parent.schemaObjects) {
    for (const [key, hash] of Object.entries(current.schemaObjects)) if (parent.schemaObjects[key] !== hash) objects[key] = hash;
    for (const key of Object.keys(parent.schemaObjects)) if (!(key in current.schemaObjects)) removedObjects.push(key);
  }
  const delta: FactsDelta = {
    parentDigest: factsDigest(parent),
    digest: factsDigest(current),
    removedTables: parent.tables.filter((t) => !now.has(t.name)).map((t) => t.name),
    removedObjects,
    ...countTables(current.tables, nonTableFacts),
  };
  const stored = { tables, ...(current.schemaObjects ? { schemaObjects: objects } : {}) };
  // Resolving must give back the current facts (a table listed twice would not), else store them whole.
  if (factsDigest(applyFactsDelta(parent, stored, delta, 'backup')) !== delta.digest) return undefined;
  return { ...stored, delta };
}

/**
 * A restore point's complete facts from its stored ones and its parent's complete facts. Tables
 * keep the parent's order; tables new in this restore point follow in the order stored.
 */
export function applyFactsDelta(parent: CompleteFacts, stored: CompleteFacts, delta: FactsDelta, where: string): CompleteFacts {
  if (factsDigest(parent) !== delta.parentDigest) {
    throw new StrataError('CHAIN_BROKEN', `${where}: its table facts are stored as changes against facts its parent does not have (the chain is not the one it was taken on)`);
  }
  const removed = new Set(delta.removedTables);
  const changed = new Map(stored.tables.map((t) => [t.name, t]));
  const tables: TableStats[] = [];
  const seen = new Set<string>();
  for (const t of parent.tables) {
    if (removed.has(t.name)) continue;
    tables.push(changed.get(t.name) ?? t);
    seen.add(t.name);
  }
  for (const t of stored.tables) if (!seen.has(t.name)) tables.push(t);
  let schemaObjects: SchemaObjects | undefined;
  if (parent.schemaObjects && stored.schemaObjects) {
    const objects: Record<string, string> = { ...parent.schemaObjects };
    for (const key of delta.removedObjects) delete objects[key];
    Object.assign(objects, stored.schemaObjects);
    schemaObjects = objects;
  }
  const facts: CompleteFacts = { tables, ...(schemaObjects ? { schemaObjects } : {}) };
  return facts;
}

/** Resolves and checks: the complete facts, or an ARTIFACT_CORRUPT error when they do not match the recorded digest. */
export function resolveFacts(parent: CompleteFacts, stored: CompleteFacts, delta: FactsDelta, where: string): CompleteFacts {
  const facts = applyFactsDelta(parent, stored, delta, where);
  if (factsDigest(facts) !== delta.digest) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: its table facts, completed with its parent's, do not match the digest its manifest recorded`);
  }
  return facts;
}

/** Checks the shape of a manifest's `factsDelta`. */
export function isFactsDelta(value: unknown): value is FactsDelta {
  const d = value as Partial<FactsDelta> | null;
  const hex = (s: unknown): boolean => typeof s === 'string' && /^[0-9a-f]{64}$/.test(s);
  const names = (a: unknown): boolean => Array.isArray(a) && a.every((n) => typeof n === 'string' && n.length <= 4096);
  return (
    typeof d === 'object' &&
    d !== null &&
    hex(d.parentDigest) &&
    hex(d.digest) &&
    names(d.removedTables) &&
    names(d.removedObjects) &&
    Number.isSafeInteger(d.tableCount) &&
    Number.isSafeInteger(d.rowCount)
  );
}
