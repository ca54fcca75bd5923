// Preloaded into a node child (`node --import ./bench/rss-reporter.mjs ...`) when GNU time is not
// available: on exit, writes the process's peak resident set size (KiB, from getrusage) to the
// file named by STRATA_BENCH_RSS_FILE (with its user and system CPU seconds), or to stderr as `maxRSS_KiB=<n>` if that is not set.
import { writeFileSync } from 'node:fs';

process.on('exit', () => {
  const { maxRSS, userCPUTime, systemCPUTime } = process.resourceUsage();
  const file = process.env.STRATA_BENCH_RSS_FILE;
  // Same shape as GNU time's `-f '%M %U %S'`: KiB, user seconds, system seconds.
  if (file) writeFileSync(file, `${maxRSS} ${userCPUTime / 1e6} ${systemCPUTime / 1e6}\n`);
  else process.stderr.write(`maxRSS_KiB=${maxRSS}\n`);
});
