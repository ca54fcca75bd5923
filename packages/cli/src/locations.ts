import { createDefaultEngines, supportedStorages } from '@strata/sdk';
import type { EngineDisplay } from '@strata/sdk';

/** How people see each engine this build ships, from the engines themselves (never a list of names here). */
export function engineDisplays(): EngineDisplay[] {
  const registry = createDefaultEngines();
  return registry.kinds().map((kind) => registry.get(kind)!.display);
}

/** One line per engine: how to name one of its databases (`<db>`, `--to`, "url" in strata.config.json). */
export function databaseLocationLines(): string[] {
  return engineDisplays().map((display) => {
    const [scheme, ...others] = display.schemes;
    const also = others.length > 0 ? ` (also ${others.map((s) => `${s}://`).join(', ')})` : '';
    if (display.locator === 'file') {
      const forms = scheme !== undefined ? `a file path such as ${display.example}, or ${scheme}:PATH` : `a file path such as ${display.example}`;
      return `${display.name}: ${forms}`;
    }
    const password = display.passwordSources ? `; password in the URL or ${display.passwordSources}` : '';
    return `${display.name}: ${display.example}${also}${password}`;
  });
}

/**
 * Where a repository can be: one line per storage of the registry (help of --repo, STRATA_REPO
 * and "repository"), so a new storage kind shows up in the help without a change here.
 */
export const REPOSITORY_LOCATIONS: readonly { readonly scheme: string; readonly description: string }[] = supportedStorages();

/** The repository locations as one phrase, for option descriptions. */
export function repositoryLocationPhrase(): string {
  return REPOSITORY_LOCATIONS.map((l) => l.description).join(', or ');
}
