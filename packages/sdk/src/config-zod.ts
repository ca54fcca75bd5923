/**
 * The part of zod that config-schema.ts builds strata.config.json's schema from, and nothing else:
 * scripts/compact-zod.mjs bundles this file with esbuild into dist/config-zod.cjs, one small
 * CommonJS file that loads in about a tenth of the time the zod package takes through its hundred
 * modules (measured: 13 against 110 ms), in every `strata` that reads a config file.
 */
export { array, boolean, discriminatedUnion, enum, int, literal, record, strictObject, string, toJSONSchema, union, url } from 'zod';
