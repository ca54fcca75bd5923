/**
 * The value a plain object holds under a name a user chose (a label, a database, a job), or
 * undefined. `record[name]` would also find what every object inherits: a label `constructor`
 * or `toString` would read a function, and a database named so would look configured.
 */
export function ownEntry<T>(record: Readonly<Record<string, T>> | undefined, name: string): T | undefined {
  return record !== undefined && Object.hasOwn(record, name) ? record[name] : undefined;
}
