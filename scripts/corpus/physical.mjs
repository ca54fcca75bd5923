// `npm run test:corpus:physical`: the physical engine on PostgreSQL's own regression cluster. The
// cluster archives its WAL through `strata wal-push`; Strata takes a base backup, the cluster
// changes in many ways (rows updated and deleted, a table rewritten, indexes rebuilt, a database
// copied, large objects, sequences, an unlogged table), Strata takes an incremental, the cluster
// changes again; then four recoveries (a base backup's end, a named restore point, the
// incremental's end, a moment between commits) must each equal what the cluster itself showed at
// that moment: every database's `pg_dump --schema-only` entries, every table's rows, sequences and
// large objects, read from the servers only. verify --level full runs on both base backups.
//
//   node scripts/corpus/physical.mjs [--pg17] [--rebuild] [--keep]
//     --pg17     on PostgreSQL 17 (scripts/pg17/install.sh's programs, or STRATA_CORPUS_PG17_BINDIR),
//                where the incremental is block-level and a restore runs pg_combinebackup. Debian 12
//                has no source of PostgreSQL 17's regression tests, so the cluster is the one they
//                leave on the installed PostgreSQL, moved over with PostgreSQL 17's pg_dumpall
//                (what cannot be restored there, such as functions of the old server's regress.so,
//                is counted in the report)
//     --rebuild  run pg_regress again instead of reusing the cached cluster
//     --keep     leave the work folder (stopped clusters, repository) for inspection
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PrivateCluster, freePort, runAsServerUser, serverOwnedDir } from './cluster.mjs';
import { dataFingerprints, schemaEntries } from './inspect.mjs';
import { prepareCorpusTools } from './prepare.mjs';
import { startRegressionCluster } from './regression.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'packages', 'cli', 'dist', 'main.js');
const outputDir = join(root, 'corpus-output');
const ENTRY = 'cluster';
const flags = new Set(process.argv.slice(2));
for (const flag of flags) {
  if (!['--pg17', '--rebuild', '--keep'].includes(flag)) {
    console.error(`corpus: unknown option ${flag} (known: --pg17, --rebuild, --keep)`);
    process.exit(2);
  }
}

const report = { measuredOn: '', startedAt: new Date().toISOString(), corpus: {}, backups: [], recoveries: [], verify: [], timings: [], problems: [] };

function say(message) {
  console.log(`corpus: ${message}`);
}

function problem(message) {
  report.problems.push(message);
  say(`PROBLEM: ${message}`);
}

async function timed(label, fn) {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    report.timings.push({ step: label, seconds: (Date.now() - started) / 1000 });
  }
}

/**
 * Changes after the base backup: each kind of change a base backup's file copy, a chunk-reuse
 * incremental and WAL replay must all carry. Statements run one by one in `regression` (those
 * marked `postgres` from there: a database cannot be copied while a session is in it).
 */
const FIRST_CHANGES = [
  'UPDATE tenk1 SET stringu1 = stringu1 WHERE unique1 % 10 = 0',
  'DELETE FROM onek2 WHERE unique1 % 3 = 0',
  'CREATE TABLE strata_corpus_copy AS SELECT * FROM tenk2',
  'CREATE INDEX strata_corpus_copy_unique1 ON strata_corpus_copy (unique1)',
  'VACUUM FULL onek',
  'REINDEX TABLE tenk2',
  'CREATE TABLE strata_corpus_truncated AS SELECT * FROM onek',
  'TRUNCATE strata_corpus_truncated',
  'CREATE UNLOGGED TABLE strata_corpus_unlogged AS SELECT g AS n FROM generate_series(1, 1000) g',
  "SELECT lo_from_bytea(0, convert_to(repeat('strata corpus ', 20000), 'UTF8'))",
  'CREATE SEQUENCE strata_corpus_seq',
  "SELECT nextval('strata_corpus_seq') FROM generate_series(1, 5)",
  'postgres: CREATE DATABASE strata_corpus_db TEMPLATE regression',
];
const SECOND_CHANGES = [
  'UPDATE tenk1 SET string4 = string4 WHERE unique1 < 200',
  "SELECT lo_from_bytea(0, convert_to(repeat('second ', 5000), 'UTF8'))",
  "SELECT nextval('strata_corpus_seq') FROM generate_series(1, 3)",
  'INSERT INTO strata_corpus_copy SELECT * FROM tenk2 WHERE unique1 < 50',
];
/** After the moment the last recovery targets: none of it may be in that recovery. */
const LATER_CHANGES = ['DELETE FROM tenk2 WHERE unique1 % 2 = 0', 'CREATE TABLE strata_corpus_after AS SELECT * FROM onek', 'DROP TABLE strata_corpus_copy'];

function gitDescription() {
  const run = (args) => spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' }).stdout.trim();
  const head = run(['log', '-1', '--format=%h %s']);
  const dirty = run(['status', '--porcelain', '--untracked-files=no']) !== '';
  return `${head}${dirty ? ' (with uncommitted changes)' : ''}`;
}

async function withClient(url, fn) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function applyChanges(cluster, statements) {
  for (const statement of statements) {
    const [database, sql] = statement.startsWith('postgres: ') ? ['postgres', statement.slice('postgres: '.length)] : ['regression', statement];
    await withClient(cluster.url(database), (c) => c.query(sql)).catch((error) => {
      throw new Error(`the corpus's own change failed in ${database}: ${sql}: ${error.message}`);
    });
  }
}

/** Switches to a new WAL file and waits until the archiver (strata wal-push) has stored it. */
async function switchAndArchive(cluster) {
  await withClient(cluster.url('postgres'), async (c) => {
    const last = (await c.query('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0].w;
    for (const started = Date.now(); ; await sleep(250)) {
      const row = (await c.query('SELECT last_archived_wal AS w, failed_count::int AS failed, last_failed_wal AS f FROM pg_stat_archiver')).rows[0];
      if (row.failed > 0) throw new Error(`strata wal-push failed ${row.failed} time(s), last on ${row.f}: see ${cluster.logFile}`);
      if (row.w !== null && row.w >= last) return;
      if (Date.now() - started > 300_000) throw new Error(`the archiver did not store ${last} within 5 minutes`);
    }
  });
}

/**
 * What a cluster holds, read from the server only: per connectable database, its schema entries,
 * every table's rows, sequences and large objects; and which tables and sequences are unlogged
 * (PostgreSQL resets them in any recovery: they are in neither a base backup nor the WAL).
 */
async function clusterContents(env, urlOf) {
  const items = new Map();
  const unlogged = new Set();
  const databases = await withClient(urlOf('postgres'), async (c) => (await c.query('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname));
  for (const db of databases) {
    for (const [key, value] of schemaEntries(env, db, db)) items.set(`${db}: ${key}`, value);
    for (const [key, value] of (await dataFingerprints(urlOf(db))).fingerprints) items.set(`${db}: ${key}`, value);
    const names = await withClient(
      urlOf(db),
      async (c) => (await c.query("SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'rows ' END || format('%I.%I', n.nspname, c.relname) AS key FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'm', 'S')")).rows,
    );
    for (const { key } of names) unlogged.add(`${db}: ${key}`);
  }
  return { databases, items, unlogged };
}

const sequenceState = /^last_value (-?\d+), is_called (true|false)$/;

/**
 * Compares a recovered cluster with what the source showed at the target. Two differences are
 * PostgreSQL's own, not losses: an unlogged table comes back empty and an unlogged sequence at
 * its start, and a sequence comes back up to 32 values ahead (nextval logs that many in advance,
 * and recovery replays the logged value).
 */
function judge(expected, actual) {
  const failures = [];
  const expectedByPostgres = { unloggedReset: [], sequencesAhead: [] };
  for (const key of [...new Set([...expected.items.keys(), ...actual.items.keys()])].sort()) {
    const want = expected.items.get(key);
    const got = actual.items.get(key);
    if (want === got) continue;
    if (expected.unlogged.has(key) && got !== undefined && (got.startsWith('0 rows,') || /, is_called false$/.test(got))) {
      expectedByPostgres.unloggedReset.push(key);
      continue;
    }
    const [w, g] = [sequenceState.exec(want ?? ''), sequenceState.exec(got ?? '')];
    if (w && g && g[2] === 'true' && BigInt(g[1]) > BigInt(w[1]) && BigInt(g[1]) - BigInt(w[1]) <= 32n) {
      expectedByPostgres.sequencesAhead.push(`${key}: ${w[1]} -> ${g[1]}`);
      continue;
    }
    failures.push({ key, expected: want ?? 'missing', recovered: got ?? 'missing' });
  }
  return { failures, expectedByPostgres };
}

/** PostgreSQL 17's programs: STRATA_CORPUS_PG17_BINDIR, else scripts/pg17/install.sh's (installed when missing). */
function pg17Bindir() {
  if (process.env.STRATA_CORPUS_PG17_BINDIR) return process.env.STRATA_CORPUS_PG17_BINDIR;
  const installed = spawnSync('bash', [join(root, 'scripts', 'pg17', 'install.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (installed.status !== 0) throw new Error('scripts/pg17/install.sh failed (see above)');
  return installed.stdout.trim().split('\n').at(-1);
}

/**
 * Moves the regression cluster `donor` (running) into `cluster` (a new PostgreSQL 17 one, started
 * here) with PostgreSQL 17's pg_dumpall and psql; returns what did not restore.
 */
async function moveTo17(donor, cluster, work) {
  const dump = join(work, 'donor', 'regression.sql');
  say(`moving the regression cluster to PostgreSQL 17: pg_dumpall of port ${donor.port}`);
  const dumped = spawnSync(join(cluster.bindir, 'pg_dumpall'), ['--no-sync', '-f', dump], { env: donor.clientEnv(), encoding: 'utf8' });
  if (dumped.status !== 0) throw new Error(`pg_dumpall failed: ${dumped.stderr}`);
  donor.stop();
  cluster.init();
  await cluster.start();
  const loaded = spawnSync(join(cluster.bindir, 'psql'), ['-X', '-q', '-f', dump, '-d', 'postgres'], { env: cluster.clientEnv(), encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const errors = loaded.stderr.split('\n').filter((l) => /ERROR:/.test(l));
  say(`psql reported ${errors.length} error(s) loading it (objects PostgreSQL 17 would not take)`);
  return { errors: errors.length, firstErrors: errors.slice(0, 15) };
}

async function main() {
  report.measuredOn = gitDescription();
  const tools = await timed('prepare (packages, source, regress.so)', async () => prepareCorpusTools());
  report.corpus = { server: tools.serverVersion, regressionSource: `postgresql-${tools.major} ${tools.sourceVersion}` };
  const work = mkdtempSync(join(tmpdir(), 'strata-corpus-physical-'));
  chmodSync(work, 0o755);
  const pg17 = flags.has('--pg17') ? pg17Bindir() : undefined;
  const bindir = pg17 ?? tools.bindir;
  const major = pg17 ? 17 : Number(tools.major);
  const donor = pg17 ? new PrivateCluster({ bindir: tools.bindir, dir: join(work, 'donor') }) : undefined;
  if (pg17) report.corpus.server = spawnSync(join(pg17, 'postgres'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  const cluster = new PrivateCluster({ bindir, dir: join(work, 'cluster') });
  const restores = join(work, 'restores');
  const running = new Set();
  const pgCtl = (args) => runAsServerUser(join(bindir, 'pg_ctl'), args);
  const cleanUp = () => {
    for (const dir of running) pgCtl(['-D', dir, '-m', 'immediate', '-w', 'stop']);
    donor?.stop();
    cluster.stop();
    if (flags.has('--keep')) say(`kept ${work} (clusters stopped)`);
    else rmSync(work, { recursive: true, force: true });
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      cleanUp();
      process.exit(130);
    });
  }

  // The archive command, the strata commands and the restores run as the server's user: they
  // read and write the same repository, and PostgreSQL refuses to run restored files as root.
  const own = join(work, 'strata');
  const passFile = join(own, 'passphrase');
  const config = join(own, 'strata.config.json');
  const clientEnv = (port) => ({ ...process.env, PATH: `${bindir}:${process.env.PATH}`, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGPASSWORD: '', PGDATABASE: 'postgres' });
  const strata = (args) => {
    const result = runAsServerUser(process.execPath, [cli, ...args, '--config', config, '--passphrase-file', passFile, '--json'], { env: { ...process.env, STRATA_PG_BINDIR: bindir } });
    let json;
    try {
      json = JSON.parse(result.stdout);
    } catch {
      json = undefined;
    }
    return { status: result.status ?? 1, json, stderr: (result.stderr ?? '').trim() };
  };

  try {
    await timed('the regression cluster (cached, or initdb + pg_regress)', async () => {
      report.corpus.pgRegress = await startRegressionCluster(tools, donor ?? cluster, { rebuild: flags.has('--rebuild'), say });
      if (donor) report.corpus.movedToPg17 = await moveTo17(donor, cluster, work);
    });
    cluster.stop();
    mkdirSync(own);
    writeFileSync(passFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
    writeFileSync(config, JSON.stringify({ repository: join(own, 'repository'), databases: { [ENTRY]: { url: cluster.url('postgres'), method: 'physical' } } }));
    serverOwnedDir(own);
    serverOwnedDir(restores);
    const archive = [process.execPath, cli, 'wal-push', '%p', '--db', ENTRY, '--config', config, '--passphrase-file', passFile].join(' ');
    const settings = ['archive_mode = on', `archive_command = '${archive}'`, ...(major >= 17 ? ['summarize_wal = on'] : [])];
    appendFileSync(join(cluster.dataDir, 'postgresql.auto.conf'), `${settings.join('\n')}\n`);
    // Full-page writes on, as on any server whose files are backed up (the cached cluster was built without).
    await cluster.start(['full_page_writes=on']);
    say(`private cluster on 127.0.0.1:${cluster.port}, archiving through strata wal-push`);
    const init = strata(['init']);
    if (init.status !== 0) throw new Error(`strata init failed: ${init.stderr}`);
    // The archive's first segment, so that the base backup's WAL follows a segment already archived.
    await switchAndArchive(cluster);

    const backup = (label, args) => {
      const result = strata(['backup', ENTRY, ...args]);
      if (result.status !== 0 || !result.json?.id) throw new Error(`strata backup ${args.join(' ')} failed (exit ${result.status}): ${result.stderr}`);
      const b = result.json.backup ?? {};
      report.backups.push({ label, id: result.json.id, type: b.type, incrementalMethod: b.incrementalMethod, storedBytes: b.storedBytes, databaseBytes: b.databaseBytes });
      say(`${label}: ${result.json.id} (${b.storedBytes ?? '?'} bytes stored${b.incrementalMethod ? `, ${b.incrementalMethod}` : ''})`);
      return result.json.id;
    };
    const contents = (label) => timed(`reading the source (${label})`, async () => clusterContents(clientEnv(cluster.port), (db) => cluster.url(db)));

    const base = await timed('strata backup (full)', async () => backup('full base backup', []));
    const atBase = await contents('at the full');
    say(`the source holds ${atBase.databases.length} databases, ${atBase.items.size} compared items (${atBase.unlogged.size} unlogged relations)`);
    // A change between the base backup's end and the restore point, so that stopping at either is told apart.
    await applyChanges(cluster, ['CREATE TABLE strata_corpus_before_point AS SELECT g AS n FROM generate_series(1, 10) g']);
    const atPoint = await contents('at the restore point');
    await withClient(cluster.url('postgres'), (c) => c.query("SELECT pg_create_restore_point('corpus_before_changes')"));
    await timed('the first changes', async () => applyChanges(cluster, FIRST_CHANGES));
    const atIncremental = await contents('before the incremental');
    const incremental = await timed('strata backup --type incremental', async () => backup('incremental', ['--type', 'incremental']));
    await timed('the second changes', async () => applyChanges(cluster, SECOND_CHANGES));
    await switchAndArchive(cluster);
    const atMoment = await contents('at the moment');
    // A second on each side, so that the commits before and after the moment are not within clock resolution.
    await sleep(1100);
    const moment = new Date().toISOString();
    await sleep(1100);
    await applyChanges(cluster, LATER_CHANGES);
    await switchAndArchive(cluster);

    const recover = async (label, args, expected) => {
      const target = join(restores, `r${report.recoveries.length + 1}`);
      const entry = { label, args: args.join(' '), outcome: 'failed' };
      report.recoveries.push(entry);
      say(`recovery: ${label} (strata restore ${args.join(' ')} --start)`);
      const result = await timed(`strata restore ${label}`, async () => strata(['restore', ...args, '--db', ENTRY, '--to', target, '--target-action', 'promote', '--start']));
      if (result.status !== 0) {
        problem(`${label}: strata restore failed (exit ${result.status}): ${result.stderr}`);
        return;
      }
      entry.reached = result.json?.reached;
      // What Strata's own server reached is the result; the directory is read afterwards.
      if (entry.reached?.state !== 'promoted') {
        problem(`${label}: strata restore --start reports ${JSON.stringify(entry.reached)}, not a promotion at the target`);
        return;
      }
      const port = await freePort();
      const log = join(restores, `r${report.recoveries.length}.log`);
      const started = pgCtl(['-D', target, '-l', log, '-w', '-t', '300', '-o', `-p ${port} -k ${target} -c listen_addresses=127.0.0.1 -c archive_mode=off`, 'start']);
      if (started.status !== 0) {
        problem(`${label}: the recovered data directory does not start: ${started.stdout}${started.stderr}`);
        return;
      }
      running.add(target);
      try {
        const url = (db) => `postgres://postgres@127.0.0.1:${port}/${db}`;
        const actual = await timed(`reading the recovery (${label})`, async () => clusterContents(clientEnv(port), url));
        const { failures, expectedByPostgres } = judge(expected, actual);
        Object.assign(entry, { outcome: failures.length === 0 ? 'equal' : 'different', compared: expected.items.size, failures: failures.slice(0, 40), moreFailures: Math.max(0, failures.length - 40), expectedByPostgres });
        if (failures.length > 0) problem(`${label}: ${failures.length} item(s) differ from the source at that moment (first: ${failures[0].key})`);
        else say(`${label}: equal to the source at that moment (${expected.items.size} items; ${expectedByPostgres.unloggedReset.length} unlogged relations reset (tables empty, sequences at their start), ${expectedByPostgres.sequencesAhead.length} sequences ahead, as PostgreSQL defines)`);
      } finally {
        pgCtl(['-D', target, '-m', 'fast', '-w', 'stop']);
        running.delete(target);
        rmSync(target, { recursive: true, force: true });
      }
    };
    await recover('the full base backup\'s end', [base, '--immediate'], atBase);
    await recover('the named restore point', ['latest', '--name', 'corpus_before_changes'], atPoint);
    await recover('the incremental\'s end', [incremental, '--immediate'], atIncremental);
    await recover(`a moment between commits (${moment})`, ['latest', '--as-of', moment], atMoment);

    for (const [label, id] of [['full', base], ['incremental', incremental]]) {
      const verified = await timed(`strata verify --level full (${label})`, async () => strata(['verify', id, '--level', 'full']));
      const checks = verified.json?.reports?.flatMap((r) => r.checks.map((c) => `${c.status} ${c.name}: ${c.reason}`)) ?? [];
      report.verify.push({ label, exit: verified.status, outcome: verified.json?.outcome ?? 'error', checks, error: verified.json ? undefined : verified.stderr });
      if (verified.status !== 0 || verified.json?.outcome !== 'passed') problem(`strata verify --level full of the ${label}: ${verified.json?.outcome ?? 'error'} (exit ${verified.status})${verified.json ? '' : `: ${verified.stderr}`}`);
      else say(`verify --level full of the ${label}: passed`);
    }
    const walk = strata(['verify', '--all']);
    report.verify.push({ label: 'verify --all (the archived WAL)', exit: walk.status, outcome: walk.json?.outcome ?? 'error' });
    if (walk.status !== 0) problem(`strata verify --all: exit ${walk.status}: ${walk.stderr}`);
  } catch (error) {
    problem(`the run stopped: ${error.message}`);
  } finally {
    cleanUp();
  }

  const lines = [
    `# Corpus run: the physical engine on PostgreSQL's regression cluster${pg17 ? ' (PostgreSQL 17)' : ''}`,
    '',
    `- measured on: ${report.measuredOn}`,
    `- started: ${report.startedAt}`,
    `- corpus: ${JSON.stringify(report.corpus)}`,
    '',
    '## Backups',
    ...report.backups.map((b) => `- ${b.label}: ${b.id}, ${b.storedBytes} bytes stored of ${b.databaseBytes}${b.incrementalMethod ? ` (${b.incrementalMethod})` : ''}`),
    '',
    '## Recoveries, each against the source at its target',
    ...report.recoveries.flatMap((r) => [
      `- ${r.label} (\`${r.args}\`): **${r.outcome}**${r.compared ? `, ${r.compared} items compared` : ''}${r.reached ? `; reached ${JSON.stringify(r.reached)}` : ''}`,
      ...(r.expectedByPostgres ? [`  - as PostgreSQL defines: ${r.expectedByPostgres.unloggedReset.length} unlogged relations reset (tables empty, sequences at their start), sequences ahead: ${r.expectedByPostgres.sequencesAhead.join('; ') || 'none'}`] : []),
      ...(r.failures ?? []).map((f) => `  - ${f.key}: source ${f.expected}; recovered ${f.recovered}`),
      ...(r.moreFailures ? [`  - ... and ${r.moreFailures} more`] : []),
    ]),
    '',
    '## verify',
    ...report.verify.flatMap((v) => [`- ${v.label}: ${v.outcome} (exit ${v.exit})${v.error ? `: ${v.error}` : ''}`, ...(v.checks ?? []).map((c) => `  - ${c}`)]),
    '',
    '## Timings',
    ...report.timings.map((t) => `- ${t.step}: ${t.seconds.toFixed(1)} s`),
    '',
    `## Result: ${report.problems.length === 0 ? 'PASSED' : `FAILED (${report.problems.length} problem(s))`}`,
    ...report.problems.map((p) => `- ${p}`),
  ];
  mkdirSync(outputDir, { recursive: true });
  const name = pg17 ? 'physical-17-report' : 'physical-report';
  writeFileSync(join(outputDir, `${name}.md`), `${lines.join('\n')}\n`);
  writeFileSync(join(outputDir, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\n${lines.join('\n')}\n`);
  say(`report written to ${join(outputDir, `${name}.md`)} (and ${name}.json)`);
  process.exit(report.problems.length === 0 ? 0 : 1);
}

await main();
