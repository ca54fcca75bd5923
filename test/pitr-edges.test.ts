import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describeCoverage } from '@strata/protocol/continuity';
import { json, strata, useTempDir } from './helpers/env.js';
import { exited, firstCommit, startReplicator, startWriter } from './helpers/pitr.js';
import { Client } from './helpers/server-client.js';

/**
 * Continuous protection where it meets the rest of Strata: what `list` and the extension's server
 * show of it, copies, mirrors and exports of segments, deleting a base, and a replicator whose
 * storage keeps failing.
 */

/** Replicates `db` (the writer committing into it) into `repo` until `segments` segments are shipped; the writer keeps going. */
async function replicateFor(repo: string, db: string, log: string, segments: number): Promise<{ stop: () => Promise<void>; stderr: () => string }> {
  const writer = startWriter(db, log, 600_000);
  await firstCommit(log);
  const replicator = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
  const pattern = new RegExp(`segment ${segments} \\(`);
  while (!pattern.test(replicator.stderr())) {
    if (replicator.child.exitCode !== null) throw new Error(`replicate exited early:\n${replicator.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    stderr: replicator.stderr,
    stop: async () => {
      replicator.child.kill('SIGTERM');
      const stopped = await exited(replicator.child);
      assert.equal(stopped.code, 0, replicator.stderr());
      writer.kill('SIGTERM');
      await exited(writer);
    },
  };
}

interface Window {
  database: string;
  base: string;
  from: string;
  to: string;
  segments: number;
  transactions: number;
  lastShippedAt: string;
}

describe('continuous protection: the covered window in list and in the extension', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('strata list and strata/list say since when a database is continuously protected and when its last change was shipped', async () => {
    const workspace = path.join(dir.path, 'ws');
    mkdirSync(workspace);
    const repo = path.join(workspace, '.backups');
    const db = path.join(workspace, 'app.db');
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const replication = await replicateFor(repo, db, path.join(dir.path, 'commits.log'), 3);
    await replication.stop();

    const listed = strata(['list', '--repo', repo]);
    assert.equal(listed.status, 0, listed.stderr);
    const line = listed.stdout.split('\n').find((l) => l.startsWith('app: continuous since'));
    assert.ok(line, `list names the covered window:\n${listed.stdout}`);
    const listedJson = json<{ backups: { id: string; createdAt: string }[]; continuity: Window[] }>(strata(['list', '--repo', repo, '--json']));
    const [window] = listedJson.continuity;
    assert.equal(listedJson.continuity.length, 1);
    assert.match(line, new RegExp(`^app: continuous since ${window!.from.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} \\(from ${window!.base}, ${window!.segments} segment\\(s\\), ${window!.transactions} transaction\\(s\\), .*\\), last change shipped \\d+\\.\\d s ago$`));
    assert.ok(window!.segments >= 3, `${window!.segments} segments`);
    assert.ok(window!.to > window!.from, 'the window reaches past its base');

    const client = new Client();
    try {
      await client.start();
      await client.request('strata/workspace', { folders: [workspace], databases: [] });
      for (const byTier of [false, true]) {
        const answer = await client.request('strata/list', { repository: repo, database: 'app', byTier });
        assert.deepEqual(answer.continuity, listedJson.continuity, `byTier ${byTier}: the server says what list --json says`);
      }
    } finally {
      await client.stop();
    }
    // The tree's line, as the extension words it (extension/src/tree.ts continuityNode).
    const now = Date.parse(window!.lastShippedAt) + 800;
    assert.equal(describeCoverage(window!, now, (iso) => iso), `continuous since ${window!.from}, last change shipped 0.8 s ago`);
    assert.equal(describeCoverage({ ...window!, broken: 'segment 2 is missing' }, now + 300_000, (iso) => iso), `continuous since ${window!.from}, last change shipped 5 min ago; chain broken, restores stop before it: segment 2 is missing`);
  });
});
