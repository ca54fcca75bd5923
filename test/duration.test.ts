import assert from 'node:assert/strict';
import { durationBefore, durationMs, parseDuration, planRetention } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { FIXTURE_DB, json, strata, useTempDir } from './helpers/env.js';
import { copyFileSync } from 'node:fs';
import * as path from 'node:path';

describe('durations: one unambiguous parser for every option', () => {
  it('reads minutes as min and months as mo, and refuses a bare m naming both', () => {
    assert.equal(durationMs(parseDuration('30min')), 30 * 60_000);
    assert.equal(durationMs(parseDuration('1d12h')), 36 * 3_600_000);
    assert.equal(durationMs(parseDuration('45s')), 45_000);
    assert.throws(() => parseDuration('30m', 'health: --max-age'), /health: --max-age: "30m" is ambiguous: write 30min for minutes or 30mo for months/);
    assert.throws(() => parseDuration('a week'), /not a duration/);
    assert.throws(() => parseDuration('7'), /not a duration/);
  });

  it('counts months and years on the calendar', () => {
    assert.equal(durationBefore(new Date('2026-03-31T12:00:00Z'), parseDuration('1mo')).toISOString(), '2026-02-28T12:00:00.000Z');
    assert.equal(durationBefore(new Date('2024-03-31T00:00:00Z'), parseDuration('1mo')).toISOString(), '2024-02-29T00:00:00.000Z');
    assert.equal(durationBefore(new Date('2026-12-01T00:00:00Z'), parseDuration('1y6mo')).toISOString(), '2025-06-01T00:00:00.000Z');
    assert.equal(durationBefore(new Date('2026-12-01T00:00:00Z'), parseDuration('1mo1d')).toISOString(), '2026-10-31T00:00:00.000Z');
  });

  it('keep-within 1mo keeps exactly the calendar month back from the newest backup', () => {
    const at = (iso: string, i: number): BackupRecord => ({ id: `app_full_${i}`, database: 'app', type: 'full', createdAt: iso, parent: null, base: null, tags: [], label: null } as unknown as BackupRecord);
    const backups = [at('2026-02-27T00:00:00Z', 1), at('2026-02-28T00:00:00Z', 2), at('2026-03-31T00:00:00Z', 3)];
    const plan = planRetention(backups, { keepWithin: '1mo' });
    assert.deepEqual(plan.keep.map((d) => d.id).sort(), ['app_full_2', 'app_full_3']);
  });

  describe('on the command line', () => {
    const dir = useTempDir();
    it('health --max-age 30m is a usage error, not thirty months', () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      const db = path.join(dir.path, 'app.db');
      copyFileSync(FIXTURE_DB, db);
      assert.equal(strata(['backup', db, '--repo', repo, '--time', new Date(Date.now() - 2 * 3_600_000).toISOString()]).status, 0);
      const ambiguous = strata(['health', '--max-age', '30m', '--repo', repo, '--json']);
      assert.equal(ambiguous.status, 2);
      assert.match(json<{ error: { message: string } }>(ambiguous).error.message, /30min for minutes or 30mo for months/);
      // Two hours old against a 30-minute limit is unhealthy.
      assert.equal(strata(['health', '--max-age', '30min', '--repo', repo]).status, 3);
      assert.equal(strata(['prune', '--keep-within', '6m', '--repo', repo]).status, 2);
      assert.equal(strata(['stats', '--since', '1m', '--repo', repo]).status, 2);
    });
  });
});
