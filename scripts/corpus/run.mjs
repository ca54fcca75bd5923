// `npm run test:corpus`: PostgreSQL's own regression database, backed up and restored by Strata and,
// as the oracle, by pg_dump -Fc + pg_restore; Strata must show no difference the oracle does not
// also show. Builds the corpus in a private cluster (never the shared server), reports object and
// row counts, differences, verify's result and timings, and exits 1 on any failure or difference.
//
//   node scripts/corpus/run.mjs [--rebuild] [--keep]
//     --rebuild  run pg_regress again instead of reusing the cached cluster
//     --keep     leave the work folder (stopped cluster, repository, dumps) for inspection
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PrivateCluster } from './cluster.mjs';
import { classify, lineDifference } from './compare.mjs';
import { dataFingerprints, objectCounts, schemaEntries, sortedRows } from './inspect.mjs';
import { prepareCorpusTools } from './prepare.mjs';
import { startRegressionCluster } from './regression.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'packages', 'cli', 'dist', 'main.js');
const outputDir = join(root, 'corpus-output');
const flags = new Set(process.argv.slice(2));
for (const flag of flags) {
  if (!['--rebuild', '--keep'].includes(flag)) {
    console.error(`corpus: unknown option ${flag} (known: --rebuild, --keep)`);
    process.exit(2);
  }
}

const timings = [];
async function timed(label, fn) {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    timings.push({ step: label, seconds: (Date.now() - started) / 1000 });
  }
}

function say(message) {
  console.log(`corpus: ${message}`);
}

/** Runs a client tool against the private cluster; returns status and output, never throws. */
function tool(cluster, cmd, args) {
  const result = spawnSync(cmd, args, { env: cluster.clientEnv(), encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 });
  return { status: result.status ?? 1, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

function mustTool(cluster, cmd, args) {
  const result = tool(cluster, cmd, args);
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${result.status}):\n${result.stderr.trim()}`);
  return result;
}

/** Runs the Strata CLI with --json; returns its parsed output or the error it printed. */
function strata(repo, passphrase, args) {
  const result = spawnSync(process.execPath, [cli, ...args, '--repo', repo, '--json'], {
    env: { ...process.env, STRATA_PASSPHRASE: passphrase },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  let json;
  try {
    json = JSON.parse(result.stdout);
  } catch {
    json = undefined;
  }
  return { status: result.status ?? 1, json, stderr: (result.stderr ?? '').trim(), stdout: result.stdout ?? '' };
}

const report = {
  measuredOn: '',
  startedAt: new Date().toISOString(),
  corpus: {},
  counts: {},
  steps: {},
  oracleRestoreErrors: [],
  comparisons: {},
  verify: undefined,
  timings,
  problems: [],
};

function problem(message) {
  report.problems.push(message);
  console.log(`corpus: PROBLEM: ${message}`);
}

function gitDescription() {
  const head = spawnSync('git', ['-C', root, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' }).stdout.trim();
  const branch = spawnSync('git', ['-C', root, 'rev-parse', '--abbrev-ref', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const dirty = spawnSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout.trim() !== '';
  return `${branch} ${head}${dirty ? ' (with uncommitted changes)' : ''}`;
}

/** Compares three databases item by item and records the outcome under `name`. */
async function compareDatabases(name, cluster, databases, { schemaOnly = false } = {}) {
  say(`comparing ${name}: pg_dump --schema-only of ${databases.source}, ${databases.oracle}, ${databases.strata}`);
  const schema = {};
  for (const [role, db] of Object.entries(databases)) schema[role] = schemaEntries(cluster.clientEnv(), db, databases.source);
  say(`comparing ${name}: every table's rows FROM ONLY (sorted), sequences, large objects`);
  const data = {};
  for (const [role, db] of Object.entries(databases)) data[role] = await dataFingerprints(cluster.url(db));
  const schemaResult = classify(schema.source, schema.oracle, schema.strata);
  const dataResult = classify(data.source.fingerprints, data.oracle.fingerprints, data.strata.fingerprints);
  // A schema-only restore has no rows by design: listing every table with rows as a difference of the round trip says nothing.
  if (schemaOnly) dataResult.oracleBaseline = dataResult.oracleBaseline.filter((i) => !i.key.startsWith('rows ') || Number(i.oracle?.split(' ')[0]) !== 0);
  const describe = (items) => items.map((item) => ({ key: item.key, lines: lineDifference(item.oracle, item.strata) }));
  const rowDetails = [];
  for (const item of dataResult.failures.filter((i) => i.key.startsWith('rows ')).slice(0, 40)) {
    const relation = item.key.slice('rows '.length);
    const oracleRows = item.oracle === undefined ? undefined : await sortedRows(cluster.url(databases.oracle), relation);
    const strataRows = item.strata === undefined ? undefined : await sortedRows(cluster.url(databases.strata), relation);
    const columns = (oracleRows ?? strataRows).columns;
    rowDetails.push({
      key: item.key,
      summary: `oracle: ${item.oracle ?? 'missing'}; strata: ${item.strata ?? 'missing'}; source: ${item.source ?? 'missing'}`,
      lines: [`  columns: (${columns})`, ...lineDifference(oracleRows?.lines.join('\n'), strataRows?.lines.join('\n'), { limit: 5 })],
    });
  }
  const otherData = dataResult.failures.filter((i) => !i.key.startsWith('rows ')).map((i) => ({ key: i.key, summary: `oracle: ${i.oracle ?? 'missing'}; strata: ${i.strata ?? 'missing'}; source: ${i.source ?? 'missing'}`, lines: [] }));
  const result = {
    schemaEntries: { source: schema.source.size, oracle: schema.oracle.size, strata: schema.strata.size },
    dataItems: { source: data.source.fingerprints.size, oracle: data.oracle.fingerprints.size, strata: data.strata.fingerprints.size },
    rows: Object.fromEntries(Object.entries(data).map(([role, d]) => [role, [...d.rowCounts.values()].reduce((a, b) => a + b, 0)])),
    failures: [...describe(schemaResult.failures).map((d) => ({ ...d, kind: 'schema' })), ...rowDetails.map((d) => ({ ...d, kind: 'data' })), ...otherData.map((d) => ({ ...d, kind: 'data' }))],
    moreRowFailures: Math.max(0, dataResult.failures.filter((i) => i.key.startsWith('rows ')).length - 40),
    strataBetter: [...schemaResult.strataBetter, ...dataResult.strataBetter].map((i) => i.key),
    oracleBaseline: [
      ...schemaResult.oracleBaseline.map((i) => ({ key: i.key, lines: lineDifference(i.source, i.oracle, { limit: 6, expectedName: 'the source', actualName: 'the oracle' }) })),
      ...dataResult.oracleBaseline.map((i) => ({ key: i.key, lines: [`  source: ${i.source ?? 'missing'}`, `  oracle: ${i.oracle ?? 'missing'}`] })),
    ],
  };
  report.comparisons[name] = result;
  const total = result.failures.length + result.moreRowFailures;
  if (total > 0) problem(`${name}: ${total} difference(s) between Strata's restore and the pg_dump/pg_restore oracle`);
  else say(`${name}: no difference from the oracle (${result.schemaEntries.strata} schema entries, ${result.dataItems.strata} tables/sequences/large objects, ${result.rows.strata} rows)`);
  return result;
}

/**
 * When an error names a type PostgreSQL cannot order ("could not identify an ordering operator for
 * type box"), the tables whose primary key index (INCLUDE columns too) has a column of that type:
 * the engine's message does not name the table, and a reader of the report needs it.
 */
async function keyColumnsOfType(url, message) {
  const type = message.match(/ordering operator for type (\S+)/)?.[1];
  if (type === undefined) return [];
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(`
      SELECT format('%s: %s', i.indrelid::regclass, pg_get_indexdef(i.indexrelid)) AS suspect
      FROM pg_index i
      WHERE i.indisprimary AND EXISTS (
        SELECT 1 FROM pg_attribute a
        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) AND format_type(a.atttypid, NULL) = $1)
      ORDER BY 1`, [type]);
    return rows.map((r) => r.suspect);
  } finally {
    await client.end();
  }
}

async function runStrata(cluster, work) {
  const repo = join(work, 'repository');
  const passphrase = randomBytes(18).toString('base64url');
  const source = cluster.url('regression');
  const init = strata(repo, passphrase, ['init']);
  if (init.status !== 0) throw new Error(`strata init failed: ${init.stderr}`);

  say('strata backup (full) of regression');
  const backup = await timed('strata backup (full)', async () => strata(repo, passphrase, ['backup', source]));
  report.steps.backup = backup.status === 0 ? { ok: true, id: backup.json?.id, storedBytes: backup.json?.backup?.storedBytes, databaseBytes: backup.json?.backup?.databaseBytes } : { ok: false, exit: backup.status, error: backup.stderr };
  let fullRestored = false;
  if (backup.status !== 0) {
    problem(`strata backup failed (exit ${backup.status}): ${backup.stderr}`);
    const suspects = await keyColumnsOfType(cluster.url('regression'), backup.stderr);
    if (suspects.length > 0) problem(`the backup's error names a type without an ordering; primary keys (with their INCLUDE columns) that contain it: ${suspects.join('; ')}`);
  } else {
    say(`backup ${backup.json.id}: stored ${backup.json.backup.storedBytes} bytes`);
    say('strata restore into regression_strata');
    const restore = await timed('strata restore (full)', async () => strata(repo, passphrase, ['restore', backup.json.id, '--to', cluster.url('regression_strata')]));
    report.steps.restore = restore.status === 0 ? { ok: true } : { ok: false, exit: restore.status, error: restore.stderr };
    if (restore.status !== 0) problem(`strata restore failed (exit ${restore.status}): ${restore.stderr}`);
    else fullRestored = true;
    say('strata verify --level full');
    const verify = await timed('strata verify --level full', async () => strata(repo, passphrase, ['verify', backup.json.id, '--level', 'full']));
    const checks = verify.json?.reports?.flatMap((r) => r.checks.map((c) => ({ name: c.name, status: c.status, reason: c.reason }))) ?? [];
    report.verify = { exit: verify.status, outcome: verify.json?.outcome ?? 'error', checks, error: verify.status !== 0 && !verify.json ? verify.stderr : undefined };
    if (verify.status !== 0 || verify.json?.outcome !== 'passed') problem(`strata verify --level full: ${verify.json?.outcome ?? 'error'} (exit ${verify.status})${verify.json ? '' : `: ${verify.stderr}`}`);
    for (const c of checks) say(`  verify ${c.status.padEnd(7)} ${c.name}: ${c.reason}`);
  }

  say('strata backup --type schema-only of regression');
  const schemaBackup = await timed('strata backup (schema-only)', async () => strata(repo, passphrase, ['backup', source, '--type', 'schema-only']));
  report.steps.schemaOnlyBackup = schemaBackup.status === 0 ? { ok: true, id: schemaBackup.json?.id } : { ok: false, exit: schemaBackup.status, error: schemaBackup.stderr };
  let schemaRestored = false;
  if (schemaBackup.status !== 0) {
    problem(`strata backup --type schema-only failed (exit ${schemaBackup.status}): ${schemaBackup.stderr}`);
  } else {
    const restore = await timed('strata restore (schema-only)', async () => strata(repo, passphrase, ['restore', schemaBackup.json.id, '--to', cluster.url('regression_strata_schema')]));
    report.steps.schemaOnlyRestore = restore.status === 0 ? { ok: true } : { ok: false, exit: restore.status, error: restore.stderr };
    if (restore.status !== 0) problem(`strata restore of the schema-only backup failed (exit ${restore.status}): ${restore.stderr}`);
    else schemaRestored = true;
  }
  return { fullRestored, schemaRestored };
}

function runOracle(cluster, work) {
  const dump = join(work, 'regression.dump');
  say('oracle: pg_dump -Fc regression');
  mustTool(cluster, 'pg_dump', ['-Fc', '--no-sync', '-f', dump, '-d', 'regression']);
  const errors = [];
  for (const [target, extra] of [['regression_oracle', []], ['regression_oracle_schema', ['--schema-only']]]) {
    say(`oracle: createdb ${target}; pg_restore ${[...extra, '-d', target].join(' ')}`);
    mustTool(cluster, 'createdb', ['-T', 'template0', target]);
    const restore = tool(cluster, 'pg_restore', [...extra, '-d', target, dump]);
    const lines = restore.stderr.split('\n').filter((l) => /^pg_restore: (error|warning)/.test(l) || /^(Command was|DETAIL|HINT|LINE)/.test(l));
    errors.push({ target, exit: restore.status, lines });
    if (lines.length > 0) say(`oracle: pg_restore into ${target} reported (part of the baseline):\n    ${lines.join('\n    ')}`);
  }
  report.oracleRestoreErrors = errors;
}

function formatReport() {
  const out = [];
  out.push(`# Corpus run: PostgreSQL regression database`);
  out.push('');
  out.push(`- measured on: ${report.measuredOn}`);
  out.push(`- started: ${report.startedAt}`);
  out.push(`- corpus: ${JSON.stringify(report.corpus)}`);
  out.push('');
  out.push('## Object counts');
  const roles = Object.keys(report.counts);
  if (roles.length > 0) {
    const keys = Object.keys(report.counts[roles[0]]);
    out.push(`| object | ${roles.join(' | ')} |`);
    out.push(`| --- | ${roles.map(() => '---:').join(' | ')} |`);
    for (const k of keys) out.push(`| ${k} | ${roles.map((r) => report.counts[r]?.[k] ?? '-').join(' | ')} |`);
  }
  out.push('');
  out.push('## Steps');
  out.push('```');
  out.push(JSON.stringify(report.steps, null, 2));
  out.push('```');
  out.push('');
  out.push('## pg_restore messages (the oracle\'s baseline)');
  for (const e of report.oracleRestoreErrors) {
    out.push(`- ${e.target}: exit ${e.exit}`);
    for (const l of e.lines) out.push(`    ${l}`);
  }
  out.push('');
  out.push('## verify --level full');
  if (report.verify) {
    out.push(`outcome: ${report.verify.outcome} (exit ${report.verify.exit})${report.verify.error ? `: ${report.verify.error}` : ''}`);
    for (const c of report.verify.checks) out.push(`- ${c.status} ${c.name}: ${c.reason}`);
    const baseline = report.comparisons['full backup and restore']?.oracleBaseline.map((b) => b.key) ?? [];
    const named = report.verify.checks.filter((c) => c.status === 'failed').flatMap((c) => [...c.reason.matchAll(/\b(table|view|materialized view|function|index|sequence|type) (\S+)\.(\S+) is defined differently/g)]);
    const alsoOracle = named.filter(([, kind, schema, name]) => baseline.includes(`${kind.toUpperCase()} ${name} in schema ${schema}`)).map(([, kind, schema, name]) => `${kind} ${schema}.${name}`);
    if (alsoOracle.length > 0) out.push(`- note: the pg_dump/pg_restore round trip changes these objects the same way (see its differences below): ${alsoOracle.join(', ')}`);
  } else {
    out.push('not run (no backup)');
  }
  for (const [name, c] of Object.entries(report.comparisons)) {
    out.push('');
    out.push(`## ${name}`);
    out.push(`schema entries (source/oracle/strata): ${c.schemaEntries.source}/${c.schemaEntries.oracle}/${c.schemaEntries.strata}; tables+sequences+large objects: ${c.dataItems.source}/${c.dataItems.oracle}/${c.dataItems.strata}; rows: ${c.rows.source}/${c.rows.oracle}/${c.rows.strata}`);
    out.push('');
    out.push(`### Differences Strata shows and the oracle does not (${c.failures.length + c.moreRowFailures})`);
    out.push('`-` the oracle\'s version, `+` Strata\'s');
    for (const f of c.failures) {
      out.push(`- ${f.kind} **${f.key}**${f.summary ? `: ${f.summary}` : ''}`);
      if (f.lines.length > 0) out.push('```', ...f.lines, '```');
    }
    if (c.moreRowFailures > 0) out.push(`- ... and ${c.moreRowFailures} more tables whose rows differ`);
    out.push('');
    out.push(`### Where Strata kept what the oracle lost (${c.strataBetter.length})`);
    for (const k of c.strataBetter) out.push(`- ${k}`);
    out.push('');
    out.push(`### Differences the pg_dump/pg_restore round trip itself shows (${c.oracleBaseline.length})`);
    for (const b of c.oracleBaseline) {
      out.push(`- ${b.key}`);
      if (b.lines.length > 0) out.push('```', ...b.lines, '```');
    }
  }
  out.push('');
  out.push('## Timings');
  for (const t of report.timings) out.push(`- ${t.step}: ${t.seconds.toFixed(1)} s`);
  out.push('');
  out.push(`## Result: ${report.problems.length === 0 ? 'PASSED' : `FAILED (${report.problems.length} problem(s))`}`);
  for (const p of report.problems) out.push(`- ${p}`);
  return out.join('\n');
}

async function main() {
  report.measuredOn = gitDescription();
  let tools;
  try {
    tools = await timed('prepare (packages, source, regress.so)', async () => prepareCorpusTools());
  } catch (error) {
    console.error(`corpus: cannot prepare the corpus: ${error.message}`);
    process.exit(1);
  }
  report.corpus = { server: tools.serverVersion, regressionSource: `postgresql-${tools.major} ${tools.sourceVersion}` };
  say(`PostgreSQL ${tools.serverVersion}; regression tests from the source package ${tools.sourceVersion}; cache ${tools.cache}`);
  const work = mkdtempSync(join(tmpdir(), 'strata-corpus-'));
  // The server's user must reach its cluster folder inside.
  chmodSync(work, 0o755);
  const cluster = new PrivateCluster({ bindir: tools.bindir, dir: join(work, 'cluster') });
  const cleanUp = () => {
    cluster.stop();
    if (flags.has('--keep')) say(`kept ${work} (cluster stopped)`);
    else rmSync(work, { recursive: true, force: true });
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      say(`${signal}: stopping the private cluster and removing ${work}`);
      cleanUp();
      process.exit(130);
    });
  }
  try {
    report.corpus.pgRegress = await timed('the regression cluster (cached, or initdb + pg_regress)', async () => startRegressionCluster(tools, cluster, { rebuild: flags.has('--rebuild'), say }));
    say(`private cluster on 127.0.0.1:${cluster.port} (data in ${cluster.dataDir})`);

    await timed('oracle: pg_dump -Fc + pg_restore (full and schema-only)', async () => runOracle(cluster, work));
    const restored = await runStrata(cluster, work);

    await timed('counting objects', async () => {
      report.counts.source = await objectCounts(cluster.url('regression'));
      report.counts.oracle = await objectCounts(cluster.url('regression_oracle'));
      if (restored.fullRestored) report.counts.strata = await objectCounts(cluster.url('regression_strata'));
    });
    if (restored.fullRestored) {
      await timed('comparing the full restores', async () => compareDatabases('full backup and restore', cluster, { source: 'regression', oracle: 'regression_oracle', strata: 'regression_strata' }));
    }
    if (restored.schemaRestored) {
      await timed('comparing the schema-only restores', async () => compareDatabases('schema-only backup and restore', cluster, { source: 'regression', oracle: 'regression_oracle_schema', strata: 'regression_strata_schema' }, { schemaOnly: true }));
    }
  } catch (error) {
    problem(`the run stopped: ${error.message}`);
  } finally {
    cleanUp();
  }
  const text = formatReport();
  mkdirSync(outputDir, { recursive: true });
  writeFileSync(join(outputDir, 'report.md'), `${text}\n`);
  writeFileSync(join(outputDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  console.log('');
  console.log(text);
  console.log('');
  say(`report written to ${join(outputDir, 'report.md')} (and report.json)`);
  process.exit(report.problems.length === 0 ? 0 : 1);
}

await main();
