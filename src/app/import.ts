// Transitional: the import lives in src/app/import/ (staging, validate, load).
// This file goes once nothing imports it.
export * from './import/index.ts';
