import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError } from '@strata/core';
import type { DataCheck, DatabaseFacts, InspectOptions } from '@strata/core';
import { connect, parseTarget } from './pg-connection.js';
import { pgProgram, pgProgramFor } from './pg-physical-engine.js';
import type { PhysicalMeta } from './pg-physical-engine.js';
import { privateServer } from './pg-point-in-time.js';
import { scanReplay, tablespacesInTheWay } from './pg-recovery-stop.js';
import type { PrivateServer } from './pg-point-in-time.js';
import { parseWalName, segmentOf } from './pg-wal.js';
import { PG_LOG_ARCHIVE_RULES } from './pg-wal-rules.js';

/**
 * The validator's checks 3–5 for a physical base backup: the restored data directory gets the
 * archived segments from its start through its end in pg_wal, and PostgreSQL itself starts on it
 * (a crash recovery from backup_label to the backup's end: it opens only once consistent); then
 * pg_amcheck checks every database's tables and indexes, and the cluster's system identifier is
 * compared with the one recorded. The server runs on 127.0.0.1 on a free port, archiving off, and
 * is stopped before this returns.
 */

/** The identity of a cluster as a physical backup records it (its "schema fingerprint"). */
export function clusterFingerprint(systemIdentifier: string): string {
  return createHash('sha256').update(`postgres cluster ${systemIdentifier}`).digest('hex');
}

export async function checkRecoveredCopy(dataDir: string, options: InspectOptions): Promise<DatabaseFacts & { integrityErrors: string[]; dataCheck: DataCheck }> {
  const meta = options.recordedMeta as Partial<PhysicalMeta> | undefined;
  if (!meta || meta.method !== 'physical' || !options.log) throw new StrataError('USAGE', 'verify: a physical backup is checked with its archived WAL, which this verification was not given');
  if (process.getuid?.() === 0) {
    throw new StrataError('USAGE', 'verify --level full of a physical backup starts PostgreSQL on the recovered copy, and PostgreSQL refuses to run as root: run strata as the user that owns the cluster (e.g. postgres)');
  }
  const { range, files, read } = options.log;
  const segmentBytes = meta.walSegmentBytes ?? 16 * 1024 * 1024;
  const last = segmentOf(meta.endLsn!, segmentBytes);
  // The segments from the backup's start through its end, as a recovery would fetch them.
  const walk = await PG_LOG_ARCHIVE_RULES.walk(range, files, read);
  const lacking = walk.missing.filter((name) => (parseWalName(name, segmentBytes)?.segno ?? 0n) <= last);
  if (lacking.length > 0) throw new StrataError('CHAIN_BROKEN', `the WAL archive lacks ${lacking.join(', ')}, which the base backup replays to become consistent`);
  const major = Number((await fs.readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim());
  // Before the archive's WAL goes in and the server writes anything.
  const dataCheck = await checkAgainstManifest(dataDir, major, options.signal);
  const written: string[] = [];
  for (const file of walk.needed) {
    const w = parseWalName(file.name, segmentBytes);
    if (w && w.segno > last) continue;
    await fs.writeFile(path.join(dataDir, 'pg_wal', file.name), await read(file), { mode: 0o600 });
    if (w) written.push(file.name);
  }
  await refuseTablespaceReplay(path.join(dataDir, 'pg_wal'), written, major, meta.endLsn!, options.signal);
  const pgCtl = pgProgram('pg_ctl', major);
  const server = await privateServer(dataDir, major, 'strata-verify-');
  const log = path.join(dataDir, 'strata-verify.log');
  const tail = async (): Promise<string> => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').slice(-15).join('\n');
  const ctl = (args: string[]): { status: number | null; out: string } => {
    const r = spawnSync(pgCtl, args, { encoding: 'utf8' });
    if (r.error) throw new StrataError('TOOL_MISSING', `verify: cannot run ${pgCtl}: ${r.error.message} (set STRATA_PG_BINDIR to the PostgreSQL ${major} programs)`);
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  try {
    const started = ctl(['start', '-D', dataDir, '-l', log, '-w', '-t', '1800', '-o', server.options]);
    if (started.status !== 0) throw new StrataError('RESTORE_FAILED', `PostgreSQL did not reach a consistent state on the restored base backup:\n${await tail()}`);
    const user = process.env['PGUSER'] ?? 'postgres';
    const client = await connect(parseTarget(server.url('postgres')), 'strata verify');
    let systemIdentifier: string;
    try {
      systemIdentifier = String((await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()')).rows[0]!.id);
    } finally {
      await client.end().catch(() => undefined);
    }
    const integrityErrors = await amcheck(pgProgram('pg_amcheck', major), server, user, options.signal);
    return { schemaFingerprint: clusterFingerprint(systemIdentifier), tables: [], integrityErrors, dataCheck };
  } finally {
    ctl(['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '600']);
    await fs.rm(server.socketDir, { recursive: true, force: true });
  }
}

/**
 * The server started on the copy replays every record of the segments in its pg_wal, those past
 * the backup's end in its last segment too, and a CREATE TABLESPACE among them makes it write into
 * the folder the primary gave: on the primary's machine, the primary's tablespace, whose pages it
 * puts back as they were (test/pg-physical-layout.test.ts saw an UPDATE lost). Restore refuses the
 * same (tablespacesInTheWay). Such a copy is not started here; nor is one whose WAL pg_waldump could
 * not read (not installed, another major version, nothing readable), since what it would replay is
 * then unknown.
 */
async function refuseTablespaceReplay(walDir: string, segments: readonly string[], major: number, backupEnd: string, signal: AbortSignal | undefined): Promise<void> {
  const created = (await scanReplay(walDir, segments, { kind: 'latest' }, { major, backupEnd, ...(signal ? { signal } : {}) }))?.tablespaces;
  if (created === undefined) {
    throw new StrataError('TOOL_MISSING', `verify: PostgreSQL ${major}'s pg_waldump did not run or read none of the WAL the check would replay, so it could not be searched for CREATE TABLESPACE, which would write into a folder of this machine; install PostgreSQL ${major}'s server programs (Debian: postgresql-${major}; PGDG RPMs: postgresql${major}-contrib) or set STRATA_PG_BINDIR to their folder`);
  }
  const t = (await tablespacesInTheWay(created))[0];
  if (t) {
    throw new StrataError(
      'USAGE',
      `verify: the WAL this base backup replays to become consistent creates tablespace ${t.oid} at ${t.location} (at LSN ${t.lsn}), and that folder exists on this machine: PostgreSQL would replay it there and write into that folder (the original cluster's tablespace, if this is its machine), so the copy was not started. Verify --level full on another machine; the checks before this one stand`,
    );
  }
}

/**
 * pg_verifybackup on the restored copy: every file backup_manifest lists is there, with the size
 * and CRC-32C PostgreSQL computed as it sent the backup. Those are the server's facts, not
 * Strata's, so a file lost or changed anywhere on the way (the artifact, the tar, the restore)
 * shows here, where pg_amcheck sees only what its catalogs name. Left out, besides what
 * pg_verifybackup always leaves out (pg_wal, backup_manifest, postgresql.auto.conf, the signal
 * files): tablespace_map, which a restore rewrites to name the tablespaces' new folders, and with
 * it pg_tblspc, whose links the server makes from that map only when it starts. So a cluster's
 * tablespaces are checked by the server's recovery and pg_amcheck alone.
 */
export async function checkAgainstManifest(dataDir: string, major: number, signal?: AbortSignal): Promise<DataCheck> {
  // From PostgreSQL 17 on, the manifest names the cluster and pg_verifybackup reads pg_control,
  // whose layout is its own major's; the earlier manifests any later pg_verifybackup reads.
  const program = pgProgramFor('pg_verifybackup', major, "verify: checking the restored copy's files against backup_manifest", major < 17);
  const args = ['--no-parse-wal', '--quiet', '--ignore', 'tablespace_map', '--ignore', 'pg_tblspc', dataDir];
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  const code = await new Promise<number | Error>((resolve) => {
    child.on('error', resolve);
    child.on('close', (c) => resolve(c ?? 1));
  });
  if (code instanceof Error) {
    if (signal?.aborted) throw new StrataError('ABORTED', 'verify: cancelled', { cause: signal.reason });
    throw new StrataError('TOOL_MISSING', `verify: cannot run ${program}: ${code.message}; install PostgreSQL ${major}'s client programs (Debian: postgresql-client-${major}) or set STRATA_PG_BINDIR to their folder`);
  }
  const checked = "every file of the base backup matches the size and checksum PostgreSQL recorded in its backup_manifest (pg_verifybackup; tablespaces' files left to the recovery and pg_amcheck)";
  if (code === 0) return { checked, problems: [] };
  const problems = out
    .split('\n')
    .map((l) => l.trim().replace(/^pg_verifybackup: (error: )?/, ''))
    .filter((l) => l.length > 0 && !l.startsWith('hint:') && !/^Try "pg_verifybackup --help"/.test(l));
  return { checked, problems: problems.length > 0 ? problems.map((p) => `pg_verifybackup: ${p}`) : [`pg_verifybackup exited with ${code}`] };
}

/**
 * pg_amcheck over every database (heap and B-tree indexes), the amcheck extension installed where
 * missing (in the scratch copy only). Its findings, one per line; none when it is not installed.
 */
async function amcheck(program: string, server: PrivateServer, user: string, signal?: AbortSignal): Promise<string[]> {
  const child = spawn(program, ['--all', '--install-missing', '--no-password', '-h', server.socketDir, '-p', String(server.port), '-U', user], { stdio: ['ignore', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  const code = await new Promise<number | 'missing'>((resolve) => {
    child.on('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ENOENT' ? 'missing' : 1));
    child.on('close', (c) => resolve(c ?? 1));
  });
  if (code === 'missing' || code === 0) return [];
  const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length > 0 ? lines.map((l) => `pg_amcheck: ${l}`) : [`pg_amcheck exited with ${code}`];
}
