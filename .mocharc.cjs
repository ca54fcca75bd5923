// Compiled tests only (tsc -b builds them into .build/test). A CI run that uses .only, or that
// finds no test at all, fails instead of passing quietly.
module.exports = {
  spec: ['.build/test/**/*.test.js'],
  forbidOnly: Boolean(process.env.CI),
  failZero: true,
  // Generous: npm test runs several files at once (scripts/test.mjs), on machines that may be
  // busy with other work too. A timeout is a hang detector, never an assertion about speed.
  timeout: 180000,
  slow: 5000,
  reporter: './scripts/spec-with-files.cjs',
};
