export { LocalStorage } from './local-storage.js';
