import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'parse5';
import type { DefaultTreeAdapterTypes } from 'parse5';
import type { BackupRecord } from '@strata/sdk';
import { FIXTURE_DB, json, strata, useTempDir } from './helpers/env.js';

type Node = DefaultTreeAdapterTypes.ChildNode | DefaultTreeAdapterTypes.Document;
type Element = DefaultTreeAdapterTypes.Element;

/** Every element of the parsed page, in document order. */
function elements(node: Node): Element[] {
  const out: Element[] = [];
  const children = 'childNodes' in node ? node.childNodes : [];
  if ('tagName' in node) out.push(node);
  // A <template>'s content is a separate fragment; the report has none, but look anyway.
  for (const child of [...children, ...('content' in node && node.content ? node.content.childNodes : [])]) out.push(...elements(child));
  return out;
}

const attr = (el: Element, name: string): string | undefined => el.attrs.find((a) => a.name === name)?.value;

function text(node: Node): string {
  if (node.nodeName === '#text') return (node as DefaultTreeAdapterTypes.TextNode).value;
  return ('childNodes' in node ? node.childNodes : []).map(text).join('');
}

describe('strata stats --html: a self-contained report of backup runs', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const run = (args: string[]): ReturnType<typeof strata> => {
    const result = strata([...args, '--repo', repo()]);
    return result;
  };

  it('shows runs per day by type and outcome, and per database each run with the catalog\'s numbers, everything escaped, nothing fetched', () => {
    const hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>';
    assert.equal(run(['init', '--no-encryption']).status, 0);
    const app = path.join(dir.path, 'app.db');
    const shop = path.join(dir.path, 'shop.db');
    copyFileSync(FIXTURE_DB, app);
    copyFileSync(FIXTURE_DB, shop);
    for (const args of [['backup', app], ['backup', app, '--type', 'incremental', '--label', hostile], ['backup', shop]]) {
      const result = run(args);
      assert.equal(result.status, 0, result.stderr);
    }
    // A run that fails: the journal has it, the catalog does not.
    const broken = path.join(dir.path, 'broken.db');
    writeFileSync(broken, 'this is no database');
    assert.equal(run(['backup', broken, '--name', 'shop']).status, 1);

    const out = path.join(dir.path, 'report.html');
    const made = run(['stats', '--html', out]);
    assert.equal(made.status, 0, made.stderr);
    assert.match(made.stdout, /wrote .*report\.html: 4 backup run\(s\) of 2 database\(s\)/);
    const html = readFileSync(out, 'utf8');
    const catalog = json<{ backups: BackupRecord[] }>(run(['list', '--json'])).backups;
    assert.equal(catalog.length, 3);

    // Nothing from outside the file: no URL, no element that loads anything, no script at all.
    assert.doesNotMatch(html, /https?:\/\//);
    const all = elements(parse(html));
    assert.deepEqual(all.filter((e) => ['script', 'link', 'img', 'iframe', 'object', 'embed'].includes(e.tagName)).map((e) => e.tagName), []);
    assert.ok(all.every((e) => !e.attrs.some((a) => ['src', 'href'].includes(a.name) || a.name.startsWith('on'))), 'no src, href or event handler anywhere');
    // The label is shown as the text it is.
    assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;'));
    assert.deepEqual(all.filter((e) => attr(e, 'class') === 'label' && text(e) !== '').map(text), [hostile]);

    // Runs per day: one stacked bar today, its segments adding up to every run.
    const bars = all.filter((e) => e.tagName === 'rect' && attr(e, 'class') === 'bar');
    const today = new Date().toISOString().slice(0, 10);
    const segments = bars.map((b) => `${attr(b, 'data-day')} ${attr(b, 'data-type')} ${attr(b, 'data-outcome')} ${attr(b, 'data-count')}`).sort();
    // The broken file fails before it is known to be a full backup: it counts under the type asked for.
    assert.deepEqual(segments, [`${today} full completed 2`, `${today} full failed 1`, `${today} incremental completed 1`]);

    // The summary: per database, runs, completed and failed.
    const summary = all.filter((e) => e.tagName === 'tr' && attr(e, 'data-runs') !== undefined).map((e) => [attr(e, 'data-database'), attr(e, 'data-runs'), attr(e, 'data-completed'), attr(e, 'data-failed')]);
    assert.deepEqual(summary, [
      ['app', '2', '2', '0'],
      ['shop', '2', '1', '1'],
    ]);

    // Per database: each run, and for each completed one the catalog's sizes and its points on the charts.
    for (const database of ['app', 'shop']) {
      const section = all.find((e) => e.tagName === 'section' && attr(e, 'data-database') === database)!;
      assert.ok(section, `a section for ${database}`);
      const inside = elements(section);
      const runs = inside.filter((e) => e.tagName === 'tr' && attr(e, 'data-outcome') !== undefined);
      const mine = catalog.filter((b) => b.database === database);
      const completed = runs.filter((r) => attr(r, 'data-outcome') === 'completed');
      assert.deepEqual(
        completed.map((r) => [attr(r, 'data-backup-id'), Number(attr(r, 'data-stored-bytes')), Number(attr(r, 'data-raw-bytes'))]).sort(),
        mine.map((b) => [b.id, b.storedBytes, b.rawBytes]).sort(),
      );
      assert.ok(completed.every((r) => Number(attr(r, 'data-duration-ms')) > 0));
      assert.equal(runs.filter((r) => attr(r, 'data-outcome') === 'failed').length, database === 'shop' ? 1 : 0);
      const points = (metric: string): number[] =>
        inside
          .filter((e) => e.tagName === 'circle' && attr(e, 'data-metric') === metric)
          .map((e) => Number(attr(e, 'data-value')))
          .sort((a, b) => a - b);
      assert.deepEqual(points('stored-bytes'), mine.map((b) => b.storedBytes).sort((a, b) => a - b));
      assert.deepEqual(points('compression-ratio'), mine.map((b) => b.storedBytes / b.rawBytes).sort((a, b) => a - b));
      assert.equal(points('duration-ms').length, mine.length + (database === 'shop' ? 1 : 0), 'a failed run has a duration too');
      // On the size and ratio charts, which have no value for it.
      assert.equal(inside.filter((e) => attr(e, 'class') === 'failure').length, database === 'shop' ? 2 : 0, 'a failed run is marked on the charts');
    }

    // --json says where the report went, and still carries the rows.
    const asJson = json<{ html: string; rows: { failed: number }[] }>(run(['stats', '--html', out, '--json']));
    assert.equal(asJson.html, out);
    assert.equal(asJson.rows.reduce((n, r) => n + r.failed, 0), 1);
  });
});
