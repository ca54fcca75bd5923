import { StrataError, redactable, withheld } from '@strata/core';

/**
 * Checks the DDL of a schema-only artifact before it runs (older artifacts carry their schema
 * only as SQL text): it must be what Strata's own writer produces, CREATE statements and the two
 * header pragmas, and nothing that reaches outside the database being built. A crafted artifact
 * could otherwise ATTACH a file anywhere and write to it, change file-level pragmas, or load code.
 */
export function checkSchemaSql(sql: string): void {
  const code = withoutLiterals(sql);
  const forbidden = /\b(attach|detach|vacuum|load_extension|reindex|analyze)\b/i.exec(code);
  if (forbidden) refuse(`it uses ${forbidden[1]!.toUpperCase()}`);
  for (const pragma of code.matchAll(/\bpragma\b[^;]*/gi)) {
    if (!/^pragma\s+(user_version|application_id)\s*=\s*-?\d+\s*$/i.test(pragma[0].trim())) refuse('it runs', pragma[0].trim().slice(0, 60));
  }
  // Every statement starts with CREATE (trigger bodies are inside their CREATE TRIGGER).
  for (const statement of topLevelStatements(code)) {
    if (!/^(create|pragma)\b/i.test(statement)) refuse('it holds a statement that is not CREATE:', statement.slice(0, 60));
  }
}

/** `sql`, the statement quoted, stays out of the journal like any SQL. */
function refuse(why: string, sql?: string): never {
  const what = sql === undefined ? why : redactable`${why} ${withheld(sql, 'SQL')}`;
  throw new StrataError('ARTIFACT_HOSTILE', redactable`restore: the schema in this backup is not one Strata writes (${what}); it was not run`);
}

/** The SQL with string literals, quoted identifiers and comments blanked, so keywords inside them do not count. */
function withoutLiterals(sql: string): string {
  return sql.replace(/'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|\/\*[\s\S]*?(?:\*\/|$)/g, (m) => (m.startsWith("'") ? "''" : m.startsWith('-') || m.startsWith('/') ? ' ' : '"x"'));
}

/** Statements split at semicolons outside trigger bodies (BEGIN ... END, with CASE ... END inside). */
function topLevelStatements(code: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (const token of code.matchAll(/\b(begin|case|end)\b|;/gi)) {
    const word = token[0].toLowerCase();
    if (word === 'begin' || word === 'case') depth++;
    else if (word === 'end') depth = Math.max(0, depth - 1);
    else if (depth === 0) {
      out.push(code.slice(start, token.index).trim());
      start = token.index! + 1;
    }
  }
  out.push(code.slice(start).trim());
  return out.filter((s) => s.length > 0);
}
