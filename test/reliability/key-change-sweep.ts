/**
 * A key change (`repo.keys.add`, `passwd`, `rotate`) killed at each of its writes to storage: a
 * child SIGKILLs itself just before its Nth put, delete, append, exclusive create or rename (no
 * cleanup, no finally block: what a power cut or `kill -9` leaves). After each kill the passphrases
 * must open the repository and its backup as the action promises, and the next key change (by
 * whoever opens it now) must sweep the key files the killed one left unlisted.
 *
 * test/keys.test.ts runs an even spread of kill points per action; `npm run test:soak` runs every
 * one (scripts/soak.mjs, scenario `keys`).
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildRichDatabase } from '../helpers/databases.js';
import { DYING_KEY_CHANGE } from '../helpers/dying-key-change.js';
import { CLI, TEST_PASSPHRASE } from '../helpers/env.js';
import type { ScenarioResult } from './scenarios.js';
import { occurrences } from './syscall-sweep.js';

export const KEY_CHANGES = ['add', 'passwd', 'rotate'] as const;
export type KeyChange = (typeof KEY_CHANGES)[number];

export interface KeyChangeSweepResult extends ScenarioResult {
  /** How many writes each action makes when it is not killed (each one a kill point). */
  readonly writes: Partial<Record<KeyChange, number>>;
}

const OTHER_PASSPHRASE = 'bob has his own passphrase';


function cli(args: string[], passfile: string): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['STRATA_PASSPHRASE'];
  const result = spawnSync(process.execPath, [CLI, ...args, '--passphrase-file', passfile], { encoding: 'utf8', env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function must(args: string[], passfile: string): string {
  const result = cli(args, passfile);
  if (result.status !== 0) throw new Error(`strata ${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

/**
 * Runs the sweep. `points` is how many kill points per action are tried, spread evenly from the
 * first write to the last; without it every write is one.
 */
export function keyChangeSweep(options: { work: string; actions?: readonly KeyChange[]; points?: number }): KeyChangeSweepResult {
  mkdirSync(options.work, { recursive: true });
  const secret = (name: string, text: string): string => {
    const file = path.join(options.work, `${name}.pass`);
    writeFileSync(file, text, { mode: 0o600 });
    return file;
  };
  const alice = secret('alice', TEST_PASSPHRASE);
  const bob = secret('bob', OTHER_PASSPHRASE);
  const carol = secret('carol', 'carol too');
  const script = path.join(options.work, 'dying-key-change.mjs');
  writeFileSync(script, DYING_KEY_CHANGE);
  const source = path.join(options.work, 'app.db');
  buildRichDatabase(source, { rows: 120 });

  const problems: string[] = [];
  const writes: Partial<Record<KeyChange, number>> = {};
  let runs = 0;

  /** Runs the change on `repository`, killed just before write `killAt` (0: never). */
  const change = (repository: string, action: KeyChange, killAt: number): { completed: boolean; writes: number; failure?: string } => {
    const child = spawnSync(process.execPath, [script], {
      env: { ...process.env, REPO: repository, ACTION: action, KILL_AT: String(killAt), OLD: TEST_PASSPHRASE, OTHER: OTHER_PASSPHRASE },
      encoding: 'utf8',
    });
    if (child.status === 0) return { completed: true, writes: Number(child.stdout) };
    if (child.signal === 'SIGKILL') return { completed: false, writes: killAt };
    return { completed: false, writes: 0, failure: `the change failed by itself: ${child.stderr}` };
  };
  /** Whether `passfile` opens the repository at `where` and verifies the backup (exit 0), or is refused as a wrong passphrase (exit 4). */
  const opens = (where: string, passfile: string, id: string): boolean | string => {
    const result = cli(['verify', id, '--repo', where], passfile);
    if (result.status === 0) return true;
    if (result.status === 4) return false;
    return `verify exits ${result.status}: ${result.stderr.trim()}`;
  };
  const listedFiles = (where: string): string[] =>
    (JSON.parse(readFileSync(path.join(where, 'repository.json'), 'utf8')) as { encryption: { keyFiles: { id: string }[] } }).encryption.keyFiles.map((f) => `${f.id}.asc`).sort();

  for (const action of options.actions ?? KEY_CHANGES) {
    // One backup (and for rotate, Bob's key file too), copied for each kill point.
    const template = path.join(options.work, `${action}-template`);
    must(['init', '--repo', template], alice);
    const id = (JSON.parse(must(['backup', source, '--name', 'app', '--type', 'full', '--json', '--repo', template], alice)) as { backup: { id: string } }).backup.id;
    if (action === 'rotate') must(['key', 'add', '--new-passphrase-file', bob, '--repo', template], alice);

    /** What the action promises of the passphrases at every moment, killed or done. */
    const promised = (old: boolean, other: boolean, completed: boolean): boolean => {
      if (action === 'passwd') return completed ? other && !old : old !== other;
      if (action === 'add') return old && (!completed || other);
      return old && other;
    };

    // Not killed: the change completes, and counts its writes (the kill points).
    const whole = path.join(options.work, `${action}-whole`);
    cpSync(template, whole, { recursive: true });
    const done = change(whole, action, 0);
    runs++;
    if (!done.completed) {
      problems.push(`${action}: ${done.failure}`);
      continue;
    }
    writes[action] = done.writes;
    const [oldAfter, otherAfter] = [opens(whole, alice, id), opens(whole, bob, id)];
    if (typeof oldAfter === 'string' || typeof otherAfter === 'string') problems.push(`${action}, completed: ${[oldAfter, otherAfter].filter((o) => typeof o === 'string').join('; ')}`);
    else if (!promised(oldAfter, otherAfter, true)) problems.push(`${action}, completed: the old passphrase ${oldAfter ? 'opens' : 'does not open'} it, the new one ${otherAfter ? 'opens' : 'does not open'} it`);
    rmSync(whole, { recursive: true, force: true });

    for (const killAt of occurrences(done.writes, options.points ?? Number.MAX_SAFE_INTEGER)) {
      const where = `${action} killed at write ${killAt}`;
      const copy = path.join(options.work, `${action}-kill-${killAt}`);
      cpSync(template, copy, { recursive: true });
      const killed = change(copy, action, killAt);
      runs++;
      if (killed.completed || killed.failure) {
        problems.push(`${where}: ${killed.failure ?? 'it was not killed (the change makes fewer writes than when it was counted)'}`);
        continue;
      }
      const [old, other] = [opens(copy, alice, id), opens(copy, bob, id)];
      if (typeof old === 'string' || typeof other === 'string') {
        problems.push(`${where}: ${[old, other].filter((o) => typeof o === 'string').join('; ')}`);
        continue;
      }
      if (!promised(old, other, false)) problems.push(`${where}: the old passphrase ${old ? 'opens' : 'does not open'} it, the new one ${other ? 'opens' : 'does not open'} it`);
      // The next change (by whoever opens it now) removes key files the killed one left unlisted.
      const next = cli(['key', 'add', '--new-passphrase-file', carol, '--repo', copy], old ? alice : bob);
      if (next.status !== 0) problems.push(`${where}: the next key change failed: ${next.stderr.trim()}`);
      const onDisk = readdirSync(path.join(copy, 'keys')).sort();
      const listed = listedFiles(copy);
      if (JSON.stringify(onDisk) !== JSON.stringify(listed)) problems.push(`${where}: key files left after the next change: ${onDisk.filter((f) => !listed.includes(f)).join(', ')}`);
      rmSync(copy, { recursive: true, force: true });
    }
  }
  // A kill here is no fault for Strata to catch: every run must simply leave the promised state.
  return { scenario: 'key-change-kills', runs, detected: 0, problems, writes };
}
