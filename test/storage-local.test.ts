import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { LocalStorage, createDefaultStorages, isStrataError, openStorage, supportedStorages } from '@strata/sdk';
import { describeStorageConformance } from './conformance/storage-conformance.js';

const made: string[] = [];
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describeStorageConformance('local folder', {
  async create(options = {}) {
    const root = mkdtempSync(path.join(tmpdir(), 'strata-storage-'));
    made.push(root);
    return { storage: new LocalStorage(path.join(root, 'repo'), options), location: path.join(root, 'repo') };
  },
  async hiddenLeftovers(storage) {
    try {
      return readdirSync(path.join(storage.location, '.tmp'));
    } catch {
      return [];
    }
  },
});

describe('the storage registry', () => {
  it('opens plain paths, relative paths and file:// URLs as local folders', () => {
    const registry = createDefaultStorages();
    assert.equal(registry.open('/var/backups/strata').location, '/var/backups/strata');
    assert.equal(registry.open('backups/here').location, path.resolve('backups/here'));
    assert.equal(registry.open(pathToFileURL('/srv/my backups').href).location, '/srv/my backups');
    assert.ok(openStorage('./x') instanceof LocalStorage);
  });

  it('refuses an unknown scheme, naming the schemes it knows, without a password from the location', () => {
    assert.throws(
      () => openStorage('gopher://user:hunter2@example.org/backups'),
      (err: unknown) => isStrataError(err, 'USAGE') && /no storage for gopher:\/\//.test(err.message) && /file:\/\//.test(err.message) && !err.message.includes('hunter2'),
    );
  });

  it('lists the supported schemes for help texts', () => {
    assert.deepEqual(supportedStorages().map((s) => s.scheme), ['file', 's3']);
    assert.ok(supportedStorages().every((s) => s.description.length > 0));
  });
});
