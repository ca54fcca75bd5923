// Running and measuring benchmark processes: wall time, peak RSS and CPU time of a child (GNU time
// when installed, else bench/rss-reporter.mjs preloaded into node children), how much CPU other
// processes used meanwhile, whether packages/*/dist was rebuilt mid-run, and formatting helpers.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = path.resolve(BENCH, '..');
export const CLI = path.join(ROOT, 'packages/cli/dist/main.js');
const REPORTER = path.join(BENCH, 'rss-reporter.mjs');

export const HAVE_GNU_TIME = spawnSync('/usr/bin/time', ['-f', '%M', 'true'], { encoding: 'utf8' }).status === 0;

/** CPU seconds (all cores, user+system+irq) the machine has spent busy since boot, from /proc/stat. */
export function machineBusySeconds() {
  try {
    const [, user, nice, system, , , irq, softirq, steal] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
    return (user + nice + system + irq + softirq + steal) / 100; // USER_HZ is 100 on Linux
  } catch { return NaN; }
}

/**
 * Runs a command; resolves with wall time (ms), stdout, and when measured the peak RSS (KiB) and
 * CPU seconds of the child, plus `otherCpu`: CPU seconds other processes on the machine used
 * meanwhile (machine busy time minus the child's), to see whether a run was disturbed.
 */
export function run(cmd, args, { env = process.env, measureRss = false, cwd } = {}) {
  let rssFile;
  let argv = [cmd, ...args];
  let childEnv = env;
  if (measureRss) {
    rssFile = path.join(os.tmpdir(), `strata-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
    if (HAVE_GNU_TIME) argv = ['/usr/bin/time', '-f', '%M %U %S', '-o', rssFile, ...argv];
    else if (cmd === process.execPath) { argv = [cmd, '--import', REPORTER, ...args]; childEnv = { ...env, STRATA_BENCH_RSS_FILE: rssFile }; }
  }
  return new Promise((resolve, reject) => {
    const busy0 = machineBusySeconds();
    const started = performance.now();
    const child = spawn(argv[0], argv.slice(1), { env: childEnv, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - started;
      const busy = machineBusySeconds() - busy0;
      let rssKiB, cpuSec, otherCpu;
      if (rssFile) {
        try {
          const [kib, user, sys] = fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
          rssKiB = kib;
          cpuSec = user + sys;
          otherCpu = Math.max(0, busy - cpuSec);
        } catch { /* none */ }
        fs.rmSync(rssFile, { force: true });
      }
      if (code !== 0) reject(new Error(`${argv.join(' ')} exited with ${code}\n${err}${out}`));
      else resolve({ wallMs, stdout: out, stderr: err, rssKiB, cpuSec, otherCpu });
    });
  });
}

/** Runs a bash script (`set -euo pipefail`) with extra environment variables, measured. */
export const sh = (script, env) => run('bash', ['-c', `set -euo pipefail\n${script}`], { env: { ...process.env, ...env }, measureRss: true });

/** Returns a function running the Strata CLI (`node [nodeArgs] packages/cli/dist/main.js ...args`, in `cwd` if given), measured, with STRATA_PASSPHRASE set. */
export const strataRunner = (passphrase) => (args, extra = {}) => run(process.execPath, [...(extra.nodeArgs ?? []), CLI, ...args], {
  env: { ...process.env, STRATA_PASSPHRASE: passphrase }, measureRss: true, cwd: extra.cwd,
});

/** Throws unless every tool is on the PATH. */
export function requireTools(tools) {
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is not installed`);
  }
}

/**
 * Installs the Debian packages of missing tools ({ command: package }) with apt-get, only when
 * running as root; otherwise throws, naming the packages to install.
 */
export function ensureDebianTools(tools) {
  const have = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
  const packages = [...new Set(Object.entries(tools).filter(([tool]) => !have(tool)).map(([, pkg]) => pkg))];
  if (packages.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`missing tools: install them (Debian: sudo apt-get install -y ${packages.join(' ')}) and run again`);
  console.log(`missing tools: apt-get install -y ${packages.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', '-q', ...packages], { stdio: 'inherit', env }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
    if (!install()) throw new Error(`apt-get install ${packages.join(' ')} failed`);
  }
  requireTools(Object.keys(tools));
}

/** Identifies the built CLI (names, sizes and mtimes of the files in packages/<pkg>/dist), to notice a rebuild mid-benchmark. */
export function distFingerprint() {
  const h = createHash('sha256');
  for (const pkg of fs.readdirSync(path.join(ROOT, 'packages')).sort()) {
    const dist = path.join(ROOT, 'packages', pkg, 'dist');
    if (!fs.existsSync(dist)) continue;
    for (const f of fs.readdirSync(dist, { recursive: true }).sort()) {
      const st = fs.statSync(path.join(dist, f));
      if (st.isFile()) h.update(`${pkg}/${f} ${st.size} ${st.mtimeMs}\n`);
    }
  }
  return h.digest('hex').slice(0, 12);
}

/** The repository's short commit id. */
export const gitCommit = () => spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();

/** What the report says about the machine. */
export const machineInfo = () => ({ nproc: os.availableParallelism?.() ?? os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, cpu: os.cpus()[0]?.model });

export const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
export const fmtS = (ms) => `${(ms / 1000).toFixed(2)} s`;
export const fmtMB = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/**
 * A fresh work folder for one benchmark (its repository in `REPO`) and a private GnuPG home
 * holding the passphrase file the by-hand pipelines read through fd 3, so it never reaches argv.
 * `close()` stops that home's gpg agent and removes it, and the work folder unless `keep`.
 */
export function benchWorkspace(work, passphrase) {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const GNUPGHOME = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-gnupg-'));
  fs.chmodSync(GNUPGHOME, 0o700);
  const PASSFILE = path.join(GNUPGHOME, 'passphrase');
  fs.writeFileSync(PASSFILE, passphrase, { mode: 0o600 });
  return {
    WORK: work,
    REPO: path.join(work, 'repo'),
    GNUPGHOME,
    PASSFILE,
    close(keep) {
      spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME } });
      fs.rmSync(GNUPGHOME, { recursive: true, force: true });
      if (!keep) fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/** The warning line for results whose runs shared the machine with busy processes (over 0.15 cores), or none. */
export function disturbanceWarning(med, during = 'a run') {
  const noisy = Math.max(...Object.values(med).map((x) => x.otherCpuPerSec));
  return noisy > 0.15 ? [`WARNING: other processes kept up to ${noisy.toFixed(2)} cores busy during ${during}; the timings are disturbed`] : [];
}

/** One line per case of where the CPU went (median wall, the tool, the database server, the whole machine). */
export function cpuLines(med, cases) {
  const width = Math.max(...cases.map(([label]) => label.length)) + 2;
  return cases.map(([label, k]) => `  ${label.padEnd(width)}wall ${fmtS(med[k].wallMs).padStart(9)}   tool ${med[k].cpuSec.toFixed(1).padStart(5)}   server ${med[k].serverCpu.toFixed(1).padStart(5)}   machine ${med[k].machineCpu.toFixed(1).padStart(5)}`);
}
