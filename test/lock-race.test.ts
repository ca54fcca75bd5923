import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { useTempDir } from './helpers/env.js';

const RACER = fileURLToPath(new URL('./helpers/lock-racer.js', import.meta.url));

/** Starts a racer; resolves with how many times it found another holder inside the lock. */
function racer(repo: string, rounds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RACER, repo, String(rounds)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`racer exited ${code}`))));
  });
}

describe('the repository lock under a many-process race', () => {
  const dir = useTempDir();

  it("a dead holder's lock is taken over by exactly one of many processes judging it stale at once", async function () {
    this.timeout(600_000);
    const repo = path.join(dir.path, 'repo');
    mkdirSync(path.join(repo, 'locks'), { recursive: true });
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    const rounds = 100;
    const processes = 6;
    const racers = Array.from({ length: processes }, () => racer(repo, rounds));
    for (let round = 0; round < rounds; round++) {
      writeFileSync(
        path.join(repo, 'locks/repository.lock'),
        JSON.stringify({ token: `dead${String(round).padStart(8, '0')}`, pid: dead, host: hostname(), operation: 'backup', acquiredAt: new Date().toISOString() }),
      );
      writeFileSync(path.join(repo, `go-${round}`), '');
      while (readdirSync(repo).filter((f) => f.startsWith(`done-${round}-`)).length < processes) await delay(5);
    }
    const doubles = (await Promise.all(racers)).reduce((a, b) => a + b, 0);
    assert.equal(doubles, 0, `in ${doubles} of ${rounds * processes} acquisitions two processes held the lock at once`);
    // Nothing is left behind: no lock, no takeover markers.
    assert.deepEqual(readdirSync(path.join(repo, 'locks')).filter((f) => !f.startsWith('.')), []);
  });
});
