// Compiled tests only (tsc -b builds them into .build/test). A CI run that uses .only, or that
// finds no test at all, fails instead of passing quietly.
module.exports = {
  spec: ['.build/test/**/*.test.js'],
  forbidOnly: Boolean(process.env.CI),
  failZero: true,
  timeout: 60000,
  slow: 5000,
  reporter: 'spec',
};
