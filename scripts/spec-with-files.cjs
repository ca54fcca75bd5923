// mocha's spec reporter, plus, at the end, how long each test file took: the lanes of
// scripts/test.mjs are balanced by hand (SERVER_FILES, BALANCING_FILES), and that needs each
// file's time from a real run, not a guess.
const Mocha = require('mocha');

const { EVENT_SUITE_BEGIN, EVENT_SUITE_END, EVENT_RUN_END } = Mocha.Runner.constants;

class SpecWithFiles extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const started = new Map();
    const took = new Map();
    runner.on(EVENT_SUITE_BEGIN, (suite) => {
      if (suite.file && !started.has(suite.file)) started.set(suite.file, Date.now());
    });
    runner.on(EVENT_SUITE_END, (suite) => {
      // A file's top-level suites end one after the other; the last end counts.
      if (suite.file && started.has(suite.file)) took.set(suite.file, Date.now() - started.get(suite.file));
    });
    runner.once(EVENT_RUN_END, () => {
      const rows = [...took].sort((a, b) => b[1] - a[1]);
      const total = rows.reduce((sum, [, ms]) => sum + ms, 0);
      console.log(`\n  time per file (${Math.round(total / 1000)} s in all):`);
      for (const [file, ms] of rows) console.log(`  ${String(Math.round(ms / 1000)).padStart(6)} s  ${file.replace(/^.*\.build\/test\//, '').replace(/\.test\.js$/, '')}`);
    });
  }
}

module.exports = SpecWithFiles;
