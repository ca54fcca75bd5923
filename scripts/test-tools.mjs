// The tests prove interoperability with real standard tools (gpg, zstd, gzip, tar, sqlite3), so
// they must be present. On a fresh Debian machine where we are root, install them; elsewhere say
// exactly what to install.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const needed = [
  ['gpg', 'gnupg'],
  ['zstd', 'zstd'],
  ['sqlite3', 'sqlite3'],
  ['gzip', 'gzip'],
  ['tar', 'tar'],
  ['sha256sum', 'coreutils'],
  // The crash sweep kills processes at exact system calls.
  ['strace', 'strace'],
  // The server engines' tests compare with the servers' own dump tools.
  ['pg_dump', 'postgresql-client'],
  ['psql', 'postgresql-client'],
  ['mysqldump', 'mariadb-client'],
  ['mysql', 'mariadb-client'],
  // The VS Code extension's end-to-end tests: a real browser, and the Kerberos headers
  // code-server's native `kerberos` module builds against.
  ['chromium', 'chromium'],
  ['krb5-config', 'libkrb5-dev'],
  // A job scheduler that Strata's temporary servers on a restored copy must not start
  // (test/pg-physical-isolation.test.ts); a file, not a command: the extension of the PostgreSQL
  // 15 server programs the tests run.
  ...(existsSync('/usr/lib/postgresql/15/bin/initdb') ? [['/usr/lib/postgresql/15/lib/pg_cron.so', 'postgresql-15-cron']] : []),
  // Extensions whose configuration tables hold the user's rows (test/postgres-fidelity.test.ts),
  // for the PostgreSQL 15 server the tests use.
  ...(existsSync('/usr/share/postgresql/15/extension')
    ? [
        ['/usr/share/postgresql/15/extension/pg_partman.control', 'postgresql-15-partman'],
        ['/usr/share/postgresql/15/extension/postgis_topology.control', 'postgresql-15-postgis-3'],
      ]
    : []),
];

const has = (cmd) => (cmd.startsWith('/') ? existsSync(cmd) : spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0);

/**
 * Installed with the others where we can, never required: a compiler cache for the release's
 * native addons, which the e2e setup's `strata` install and test/install.test.ts's SDK install
 * each compile from source (test/helpers/release.ts, userEnv); without it they compile twice.
 * (.ci/run installs it before the workspace's own install, which then fills the same cache:
 * scripts/setup.mjs.)
 */
const optional = [['ccache', 'ccache']];

export function ensureTestTools() {
  const root = process.getuid?.() === 0;
  // Tried once per machine (a marker in tmpdir), so a package the sources lack does not cost an
  // apt-get update on every run.
  const tried = path.join(tmpdir(), 'strata-optional-test-tools-tried');
  const wanted = root && has('apt-get') && !existsSync(tried) ? optional.filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg) : [];
  if (wanted.length > 0) {
    writeFileSync(tried, `${new Date().toISOString()}\n`);
    console.log(`installing optional test tools: ${wanted.join(' ')}`);
    const update = spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    if (update.status === 0) spawnSync('apt-get', ['install', '-y', '-qq', ...wanted], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  const missing = [...new Set(needed.filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg))];
  if (missing.length === 0) return;
  if (root && has('apt-get')) {
    console.log(`installing test tools: ${missing.join(' ')}`);
    const update = spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    const install = update.status === 0 && spawnSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (install && install.status === 0) return;
  }
  console.error(`The tests need these tools: ${missing.join(' ')}. Install them, e.g.: sudo apt-get install ${missing.join(' ')}`);
  process.exit(1);
}

/**
 * The S3 tests run against a real S3-compatible server (OpenStack Swift with s3api, see
 * scripts/s3/start-s3.sh). When the environment names none (AWS_ENDPOINT_URL unset), start the
 * local one, as the e2e tools are installed, and hand its endpoint and test credentials to the
 * tests through the environment. It keeps running after the tests (a second run reuses it);
 * `bash scripts/s3/stop-s3.sh` stops it. When it cannot start, outside CI the S3 tests skip with
 * one line saying how to start it; under CI that is a failure.
 */
export function ensureS3Server() {
  if (process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3) return;
  const script = new URL('./s3/start-s3.sh', import.meta.url).pathname;
  const result = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (result.status !== 0) {
    console.error('S3 test server (scripts/s3/start-s3.sh) did not start; the S3 tests will say so');
    if (process.env.CI) process.exit(1);
    return;
  }
  for (const line of result.stdout.split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) process.env[match[1]] = match[2];
  }
}

/**
 * PostgreSQL 17 for the tests of its block-level incremental base backups: Debian 12 has only 15,
 * so scripts/pg17/install.sh unpacks Debian 13's programs into a private folder (once; later runs
 * find it). The tests read the folder from STRATA_TEST_PG17_BINDIR; without it, outside CI they
 * skip with one line, and under CI that is a failure.
 */
export function ensurePg17() {
  if (process.env.STRATA_TEST_PG17_BINDIR) return;
  if (process.getuid?.() !== 0) return;
  const script = new URL('./pg17/install.sh', import.meta.url).pathname;
  const result = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const bindir = result.stdout.trim().split('\n').at(-1);
  if (result.status !== 0 || !bindir) {
    console.error('PostgreSQL 17 (scripts/pg17/install.sh) could not be installed; its tests will say so');
    if (process.env.CI) process.exit(1);
    return;
  }
  process.env.STRATA_TEST_PG17_BINDIR = bindir;
}
