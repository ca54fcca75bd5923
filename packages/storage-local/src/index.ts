export { LocalStorage, localStorageKind } from './local-storage.js';
export type { LocalStorageOptions } from './local-storage.js';
