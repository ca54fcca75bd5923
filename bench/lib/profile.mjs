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
