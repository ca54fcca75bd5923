import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { json, strata, useTempDir } from './helpers/env.js';
import { buildRichDatabase } from './helpers/databases.js';

const BETTER_SQLITE3 = createRequire(import.meta.url).resolve('better-sqlite3');

/** Runs `body` (CommonJS, with `Database` and `file` in scope) in a child process and waits for it to say 'ready' or exit. */
function holder(dir: string, file: string, body: string): Promise<ReturnType<typeof fork>> {
  const script = path.join(dir, `holder-${Math.random().toString(16).slice(2)}.cjs`);
  writeFileSync(script, `const Database = require(${JSON.stringify(BETTER_SQLITE3)}); const file = process.argv[2];\n${body}`);
  const child = fork(script, [file], { stdio: 'ignore' });
  return new Promise((resolve) => {
    child.once('message', () => resolve(child));
    child.once('exit', () => resolve(child));
  });
}

describe('source databases in states that SQLite reports misleadingly', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');

  it('a hot journal left by a crashed writer is named, with what to do', async () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const file = path.join(dir.path, 'crashed.db');
    buildRichDatabase(file, { rows: 50, wal: false });
    // A writer that dies in the middle of a big transaction, after SQLite spilled pages into the
    // database file: its rollback journal is hot.
    await holder(dir.path, file, `
      const db = new Database(file);
      db.pragma('cache_size = 2');
      db.exec('BEGIN');
      const insert = db.prepare('INSERT INTO log(message) VALUES (?)');
      for (let i = 0; i < 3000; i++) insert.run('x'.repeat(500));
      process.kill(process.pid, 'SIGKILL');`);
    assert.ok(existsSync(`${file}-journal`) && statSync(`${file}-journal`).size > 0, 'the writer left no hot journal');
    const result = strata(['backup', file, '--repo', repo(), '--json']);
    assert.equal(result.status, 1);
    const error = json<{ error: { code: string; message: string } }>(result).error;
    assert.equal(error.code, 'DATABASE_LOCKED');
    assert.match(error.message, /hot journal .*crashed.*PRAGMA integrity_check/);
    assert.ok(existsSync(`${file}-journal`), 'Strata changed the source');
  });

  it('a database held in exclusive mode by a running program is named as such', async () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const file = path.join(dir.path, 'browser.db');
    buildRichDatabase(file, { rows: 10, wal: false });
    const child = await holder(dir.path, file, `
      const db = new Database(file);
      db.pragma('locking_mode = EXCLUSIVE');
      db.exec("INSERT INTO log(message) VALUES ('held')");
      process.send('ready'); setInterval(() => {}, 1000);`);
    try {
      const result = strata(['backup', file, '--repo', repo(), '--json']);
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'DATABASE_LOCKED');
      assert.match(error.message, /exclusive mode .*Close that program/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
