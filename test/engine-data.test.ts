import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { EngineRegistry, SqliteEngine, StrataError, createDefaultEngines, initRepository, openRepository } from '@strata/sdk';
import { ROOT, sqliteQuery, useTempDir } from './helpers/env.js';

/**
 * Engines are registered in one place (`createDefaultEngines()` of packages/sdk) and describe
 * themselves (`display`, `capabilities`, `handRecovery`). The core, the protocol, the server and
 * the extension work from that: no engine is named in them, not in code, messages or comments,
 * so a new engine needs no change there.
 */
const ENGINE_FREE = ['packages/core/src', 'packages/protocol/src', 'packages/server/src', 'extension/src'];

function sourceFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.(ts|mts|js|mjs)$/.test(e.name))
    .map((e) => path.join(e.parentPath, e.name));
}

/** Every word that names a registered engine: its kind, its URL schemes, its display name's parts. */
function engineWords(): string[] {
  const engines = createDefaultEngines();
  const words = new Set(['sqlite', 'postgres', 'postgresql', 'mysql', 'mariadb']);
  for (const kind of engines.kinds()) {
    const display = engines.get(kind)!.display;
    for (const word of [kind, ...display.schemes, ...display.name.split(/[^A-Za-z0-9]+/)]) if (word.length >= 4) words.add(word.toLowerCase());
  }
  return [...words];
}

describe('engine names', () => {
  it('appear nowhere in the core, the protocol, the server or the extension, only in the engines and their registry', () => {
    const words = engineWords();
    const pattern = new RegExp(words.join('|'), 'i');
    const hits: string[] = [];
    for (const folder of ENGINE_FREE) {
      for (const file of sourceFiles(path.join(ROOT, folder))) {
        readFileSync(file, 'utf8')
          .split('\n')
          .forEach((line, i) => {
            if (pattern.test(line)) hits.push(`${path.relative(ROOT, file)}:${i + 1}: ${line.trim()}`);
          });
      }
    }
    assert.ok(words.length >= 5, `the words looked for: ${words.join(', ')}`);
    assert.deepEqual(hits, [], `engine names outside the engines (describe the difference in the engine's display, capabilities or handRecovery instead):\n${hits.join('\n')}`);
  });
});

describe('engine capabilities', () => {
  const dir = useTempDir();

  it('an engine without incrementals refuses incremental and differential backups, or takes a full one when told to fall back', async () => {
    // The same engine, saying it cannot build on a parent.
    const fullOnly = new (class extends SqliteEngine {
      override readonly capabilities = { incrementals: false, tableRestore: true };
    })();
    const db = path.join(dir.path, 'app.db');
    sqliteQuery(db, 'CREATE TABLE t (a); INSERT INTO t VALUES (1)');
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'none' });
    const repo = await openRepository(path.join(dir.path, 'repo'), { engines: new EngineRegistry().register(fullOnly), tempDir: path.join(dir.path, 'tmp') });
    try {
      await repo.backup(db, { database: 'app', type: 'full' });
      for (const type of ['incremental', 'differential'] as const) {
        await assert.rejects(
          repo.backup(db, { database: 'app', type }),
          (err: unknown) => err instanceof StrataError && err.code === 'USAGE' && err.message === `backup: SQLite backups cannot be ${type}; take a full backup (--type full)`,
        );
      }
      const fellBack = await repo.backup(db, { database: 'app', type: 'incremental', autoFull: true });
      assert.equal(fellBack.type, 'full');
      assert.equal(fellBack.parent, null);
      assert.deepEqual((await repo.list()).map((b) => b.type), ['full', 'full']);
    } finally {
      await repo.close();
    }
  });
});
