import assert from 'node:assert/strict';
import { FOREIGN_LEFTOVER_AGE_MS, abandonment, formatWorkDatabaseName, parseWorkDatabaseName, scratchDatabaseName, thisHostTag, workDatabaseNames } from '@strata/sdk';
import type { IdentifierLimit } from '@strata/sdk';

const POSTGRES: IdentifierLimit = { max: 63, unit: 'bytes' };
const MYSQL: IdentifierLimit = { max: 64, unit: 'characters' };

describe('names of work databases', () => {
  it('say whose they are: role, host, pid and time read back from the name', () => {
    const createdAt = new Date('2026-12-01T10:00:00Z');
    const name = formatWorkDatabaseName({ target: 'shop', role: 'aside', host: 'abcdef01', pid: 4_194_303, createdAt, seq: 12 }, POSTGRES);
    assert.match(name, /^shop__strata_o_abcdef01_/);
    const parsed = parseWorkDatabaseName(name, POSTGRES);
    assert.deepEqual({ ...parsed, operation: undefined }, { name, role: 'aside', prefix: 'shop', complete: true, host: 'abcdef01', pid: 4_194_303, createdAt, operation: undefined });
  });

  it('the work and aside databases of one restore share an operation; two restores do not', () => {
    const first = workDatabaseNames('shop', MYSQL);
    const second = workDatabaseNames('shop', MYSQL);
    const op = (name: string): string => parseWorkDatabaseName(name, MYSQL)!.operation;
    assert.equal(op(first.work), op(first.aside));
    assert.notEqual(op(first.work), op(second.work));
    assert.equal(parseWorkDatabaseName(first.work, MYSQL)!.pid, process.pid);
    assert.equal(parseWorkDatabaseName(scratchDatabaseName('shop', MYSQL), MYSQL)!.role, 'scratch');
  });

  it('fit the limit, cut between characters, and say when the target name was cut', () => {
    for (const [limit, length] of [[POSTGRES, (s: string) => Buffer.byteLength(s)], [MYSQL, (s: string) => [...s].length]] as const) {
      for (const target of ['a'.repeat(63), 'é'.repeat(40), '😀'.repeat(20), 'x'.repeat(limit.max - 40)]) {
        const { work } = workDatabaseNames(target, limit);
        assert.ok(length(work) <= limit.max, `${work} is too long for ${limit.unit}`);
        assert.ok(!work.includes('\uFFFD') && Buffer.from(work).toString() === work, 'no character is cut in half');
        const parsed = parseWorkDatabaseName(work, limit)!;
        assert.ok(target.startsWith(parsed.prefix));
        if (parsed.complete) assert.equal(parsed.prefix, target);
      }
      assert.equal(parseWorkDatabaseName(workDatabaseNames('app', limit).work, limit)!.complete, true);
      assert.equal(parseWorkDatabaseName(workDatabaseNames('a'.repeat(63), limit).work, limit)!.complete, false);
    }
  });

  it('other names are not read as ours', () => {
    for (const name of ['shop', 'shop__strata_notes', 'shop__strata_1a2b3c4d', 'shop__strata_old_1a2b3c4d', 'strata_scratch_0123456789ab', 'shop__strata_w_12345678', 'shop__strata_x_abcdef01_1_1_1']) {
      assert.equal(parseWorkDatabaseName(name, POSTGRES), undefined, name);
    }
  });

  it('are abandoned when their process on this host is gone, or when they are older than a week from another host', () => {
    const now = new Date('2026-12-01T10:00:00Z');
    const make = (host: string, ageMs: number) =>
      parseWorkDatabaseName(formatWorkDatabaseName({ target: 'shop', role: 'work', host, pid: 4242, createdAt: new Date(now.getTime() - ageMs), seq: 0 }, POSTGRES), POSTGRES)!;
    const here = make(thisHostTag(), 0);
    assert.equal(abandonment(here, now, () => true), undefined);
    assert.equal(abandonment(here, now, () => false), 'pid 4242 on this host, which is no longer running');
    const other = thisHostTag() === '00000000' ? '11111111' : '00000000';
    assert.equal(abandonment(make(other, FOREIGN_LEFTOVER_AGE_MS - 60_000), now, () => false), undefined);
    assert.equal(abandonment(make(other, FOREIGN_LEFTOVER_AGE_MS + 60_000), now, () => true), 'a process on another host, 7 days ago');
  });
});
