// mocha's spec reporter, plus, at the end, how long each test file took: scripts/test.mjs starts
// the longest files first (LONGEST_FIRST), and that needs each file's time from a real run, not a
// guess. Beside the wall time, the CPU the file spent: this process's and that of the programs it
// ran and waited for (strata, sqlite3, pg_dump; not the database servers'), since the files running
// at once share the cores and the wall time of one is the others' too. With STRATA_TEST_TIMES set
// (scripts/test.mjs, one mocha per file) each file's line is appended to that file as JSON instead,
// with its passes and failures, for the run's one table at its end.
const { appendFileSync, readFileSync } = require('node:fs');
const Mocha = require('mocha');

/** Clock ticks per second of /proc's times (USER_HZ, 100 on Linux's usual builds). */
const TICKS_PER_SECOND = 100;

/** CPU milliseconds this process and its waited-for children have spent (children's only on Linux). */
function cpuMs() {
  const own = process.cpuUsage();
  let children = 0;
  try {
    // Fields after the command's closing parenthesis; cutime and cstime are the 16th and 17th of the line.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    children = ((Number(fields[13]) + Number(fields[14])) * 1000) / TICKS_PER_SECOND;
  } catch {
    // Not Linux: this process's own only.
  }
  return (own.user + own.system) / 1000 + children;
}

const { EVENT_SUITE_BEGIN, EVENT_SUITE_END, EVENT_RUN_END, EVENT_TEST_PASS, EVENT_TEST_FAIL } = Mocha.Runner.constants;

/** The file a test or hook is in (a hook's own `file` may be unset; its suite's is not). */
const fileOf = (runnable) => runnable.file ?? runnable.parent?.file ?? '(unknown file)';
const shortName = (file) => file.replace(/^.*\.build\/test\//, '').replace(/\.test\.js$/, '');

class SpecWithFiles extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const started = new Map();
    const took = new Map();
    const counts = new Map();
    const count = (runnable, field) => {
      const file = fileOf(runnable);
      const c = counts.get(file) ?? { passes: 0, failures: 0 };
      c[field]++;
      counts.set(file, c);
    };
    runner.on(EVENT_TEST_PASS, (test) => count(test, 'passes'));
    runner.on(EVENT_TEST_FAIL, (test) => count(test, 'failures'));
    runner.on(EVENT_SUITE_BEGIN, (suite) => {
      if (suite.file && !started.has(suite.file)) started.set(suite.file, { at: Date.now(), cpu: cpuMs() });
    });
    runner.on(EVENT_SUITE_END, (suite) => {
      // A file's top-level suites end one after the other; the last end counts.
      const start = suite.file && started.get(suite.file);
      if (start) took.set(suite.file, { ms: Date.now() - start.at, cpu: cpuMs() - start.cpu });
    });
    runner.once(EVENT_RUN_END, () => {
      const timesFile = process.env.STRATA_TEST_TIMES;
      if (timesFile) {
        for (const file of new Set([...took.keys(), ...counts.keys()])) {
          const t = took.get(file) ?? { ms: 0, cpu: 0 };
          appendFileSync(timesFile, JSON.stringify({ file: shortName(file), ms: t.ms, cpuMs: t.cpu, ...(counts.get(file) ?? { passes: 0, failures: 0 }) }) + '\n');
        }
        return;
      }
      const rows = [...took].sort((a, b) => b[1].ms - a[1].ms);
      const total = rows.reduce((sum, [, t]) => sum + t.ms, 0);
      const totalCpu = rows.reduce((sum, [, t]) => sum + t.cpu, 0);
      console.log(`\n  time per file (${Math.round(total / 1000)} s in all; CPU ${Math.round(totalCpu / 1000)} s):`);
      for (const [file, t] of rows) {
        console.log(`  ${String(Math.round(t.ms / 1000)).padStart(6)} s  CPU ${String(Math.round(t.cpu / 1000)).padStart(4)} s  ${shortName(file)}`);
      }
    });
  }
}

module.exports = SpecWithFiles;
