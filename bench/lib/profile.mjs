// Summarising V8 CPU profiles (`node --cpu-prof`): top self-time functions of one profile (one per thread).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './measure.mjs';

/** Prints the `top` functions by self time in a .cpuprofile file, with the sampled total. */
export function summariseProfile(file, top = 12) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    const cf = byId.get(p.samples[i]).callFrame;
    const key = `${cf.functionName || '(anonymous)'} ${cf.url ? `${cf.url.replace(/^file:\/\//, '').replace(ROOT + '/', '')}:${cf.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log(`\n${path.basename(file)} (${(total / 1e6).toFixed(2)} s sampled)`);
  for (const [k, us] of rows) console.log(`  ${(us / 1e3).toFixed(0).padStart(7)} ms ${(100 * us / total).toFixed(1).padStart(5)}%  ${k}`);
}

/**
 * `--profile` of the server-engine benchmarks: one Strata backup and one restore of it under
 * `--cpu-prof`, each after `settle()`, with the top self-time functions of every thread.
 */
export async function profileBackupRestore({ strata, settle, work, backupArgs, restoreArgs, fmtS, fmtMB }) {
  let id;
  for (const name of ['backup', 'restore']) {
    const dir = path.join(work, `cpuprof-${name}`);
    await settle();
    const res = await strata(name === 'backup' ? backupArgs : restoreArgs(id), { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    if (name === 'backup') id = JSON.parse(res.stdout).backup.id;
    console.log(`\n## ${name} under --cpu-prof: ${fmtS(res.wallMs)} wall, peak RSS ${fmtMB(res.rssKiB * 1024)}, ` +
      `CPU s: strata ${res.cpuSec.toFixed(1)}, server ${res.cpu.server.toFixed(1)}, machine ${res.cpu.total.toFixed(1)}`);
    for (const f of fs.readdirSync(dir).sort()) summariseProfile(path.join(dir, f));
  }
}
