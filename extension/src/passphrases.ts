import * as path from 'node:path';
import type * as vscode from 'vscode';
import type { Prompts } from './prompts.js';

/**
 * Repository passphrases, in VS Code's SecretStorage (the OS keychain where there is one), never
 * in settings.json. Asked of the user when missing; kept once given.
 */
export class Passphrases {
  readonly #secrets: vscode.SecretStorage;
  readonly #known = new Set<string>();

  constructor(
    secrets: vscode.SecretStorage,
    readonly prompts: () => Prompts,
  ) {
    this.#secrets = secrets;
  }

  async store(repository: string, passphrase: string): Promise<void> {
    this.#known.add(keyOf(repository));
    await this.#secrets.store(keyOf(repository), passphrase);
  }

  async forget(repository: string): Promise<void> {
    await this.#secrets.delete(keyOf(repository));
  }

  /** Forgets every passphrase this session used (after the server said one was wrong). */
  async forgetAll(): Promise<void> {
    for (const key of this.#known) await this.#secrets.delete(key);
  }

  /** Answers the server's `strata/passphrase` request. */
  async provide(repository: string, purpose: 'unlock' | 'init'): Promise<string | null> {
    if (purpose === 'unlock') {
      const stored = await this.#secrets.get(keyOf(repository));
      if (stored) {
        this.#known.add(keyOf(repository));
        return stored;
      }
    }
    const prompts = this.prompts();
    const first = await prompts.input({
      title: purpose === 'init' ? `Choose a passphrase for the new repository ${repository}` : `Passphrase of the Strata repository ${repository}`,
      password: true,
      prompt: purpose === 'init' ? 'At least 8 characters. Without it no backup can be restored: keep a copy somewhere safe.' : "Kept in VS Code's secret storage",
      validateInput: (value) => (purpose === 'init' && value.length < 8 ? 'at least 8 characters' : undefined),
    });
    if (!first) return null;
    if (purpose === 'init') {
      const again = await prompts.input({ title: 'Type the passphrase again', password: true, validateInput: (value) => (value === first ? undefined : 'the two passphrases differ') });
      if (again !== first) return null;
    }
    await this.store(repository, first);
    return first;
  }
}

function keyOf(repository: string): string {
  return `strata.passphrase:${path.resolve(repository)}`;
}
