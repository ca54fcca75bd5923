// Where the machine's CPU went during a run, for benchmarks whose work is partly done by a server
// (PostgreSQL) rather than by the measured child: samples /proc every 250 ms and sorts every
// process's CPU time into
//   bench:  this process and its descendants (the measured child: node, bash, pg_dump, zstd, gpg...)
//   server: PostgreSQL processes working for the benchmark (backends whose title names a database
//           matching `serverDb`, parallel workers, and the auxiliary processes: checkpointer,
//           background writer, WAL writer, the postmaster), processes whose name matches
//           `serverProcess` (MariaDB/MySQL is one process: all of it counts, whoever it works for),
//           and the processes listed in `serverPids` (the S3 server's, which run under common names)
//   kernel: kernel threads (writeback, kswapd, ...), partly working for the benchmark's own writes
//   other:  everything else: other people's processes, other databases' backends
// A process that starts and ends between two samples is missed, and a process's CPU between its
// last sample and its exit is lost; at 250 ms that is small next to runs of seconds.
import * as fs from 'node:fs';

const TICK = 100; // USER_HZ
const AUX = /: (checkpointer|background writer|walwriter|autovacuum launcher|logical replication launcher|archiver|startup|parallel worker|stats collector)/;

function readProc(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    // f[0] = state (field 3), f[1] = ppid, f[11] = utime (14), f[12] = stime (15), f[19] = starttime (22)
    return { comm, ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / TICK, start: f[19], kthread: (Number(f[6]) & 0x200000) !== 0 };
  } catch {
    return null;
  }
}

const cmdline = (pid) => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim(); } catch { return ''; } };

/**
 * Starts sampling; `stop()` returns CPU seconds per class ({ bench, server, kernel, other, total })
 * used since the start. `serverDb`: a regular expression the title of a benchmark backend matches
 * (PostgreSQL titles are `postgres: CLUSTER: USER DATABASE HOST(PORT) STATE`). `serverProcess`: a
 * regular expression for the process name (`comm`) of a server counted whole, e.g. /^(mariadbd|mysqld)$/.
 * `serverPids`: process ids counted whole as the server (when another copy of the same server, under
 * the same name, may be running for someone else).
 */
export function startCpuSampler({ serverDb, serverProcess, serverPids = [], intervalMs = 250 } = {}) {
  const serverSet = new Set(serverPids.map(Number));
  const self = process.pid;
  const seen = new Map(); // `${pid}:${start}` -> { cls, first, last }
  const classOf = (pid, p, procs) => {
    if (p.kthread || p.ppid === 2 || pid === 2) return 'kernel';
    if (serverSet.has(pid)) return 'server';
    for (let q = pid, hops = 0; q > 1 && hops < 64; hops++) {
      if (q === self) return 'bench';
      const pp = procs.get(q);
      if (!pp) break;
      q = pp.ppid;
    }
    if (serverProcess && serverProcess.test(p.comm)) return 'server';
    if (p.comm === 'postgres' || p.comm.startsWith('postgres')) {
      const title = cmdline(pid);
      if (!title.startsWith('postgres:')) return 'server'; // the postmaster
      if (AUX.test(title)) return 'server';
      if (serverDb && serverDb.test(title)) return 'server';
    }
    return 'other';
  };
  const sample = () => {
    const procs = new Map();
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const p = readProc(name);
      if (p) procs.set(Number(name), p);
    }
    for (const [pid, p] of procs) {
      const key = `${pid}:${p.start}`;
      const s = seen.get(key);
      // A process first seen after the start began during the run: count all of its CPU.
      if (!s) seen.set(key, { cls: classOf(pid, p, procs), first: initial ? p.cpu : 0, last: p.cpu, name: p.comm });
      else s.last = p.cpu;
    }
  };
  let initial = true;
  const busy0 = machineBusy();
  sample();
  initial = false;
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      const out = { bench: 0, server: 0, kernel: 0, other: 0 };
      for (const s of seen.values()) out[s.cls] += s.last - s.first;
      if (process.env.STRATA_BENCH_CPU_DEBUG) for (const [k, s] of seen) if (s.last - s.first > 0.2) console.error(`cpu ${s.cls} ${k} ${s.name} ${(s.last - s.first).toFixed(2)}`);
      out.total = machineBusy() - busy0;
      // What the samples missed (short-lived processes, CPU after a last sample, interrupts) is not
      // attributed; `total` is the machine's busy time from /proc/stat.
      for (const k of Object.keys(out)) out[k] = Math.round(out[k] * 100) / 100;
      return out;
    },
  };
}

/**
 * Waits until the machine is quiet: everything but this process and its children used under
 * `cores` cores over 2 s (the machine is shared; other people's test suites load both cores for
 * minutes, and a database server may still be flushing after the last run). Gives up after
 * `limitSeconds` (0: does not wait). Returns the seconds waited.
 */
export async function waitQuiet({ limitSeconds, cores = 0.2, log = (s) => process.stdout.write(s), ...sampler }) {
  const t0 = performance.now();
  let told = false;
  while (limitSeconds > 0) {
    const s = startCpuSampler(sampler);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const cpu = s.stop();
    const busy = (cpu.total - cpu.bench) / 2;
    if (busy < cores) break;
    if (performance.now() - t0 > limitSeconds * 1000) { log(`  (still ${busy.toFixed(2)} cores busy after ${limitSeconds} s of waiting; running anyway)\n`); break; }
    if (!told) { log(`  (waiting for the machine to be quiet: ${busy.toFixed(2)} cores busy)\n`); told = true; }
  }
  return Math.round(performance.now() - t0) / 1000;
}

function machineBusy() {
  const [, user, nice, system, , , irq, softirq, steal] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) / TICK;
}
