// Transitional: src/app/roles.ts was split into catalog.ts (the catalog and
// its sync), access.ts (access checks), rls.ts (superusers and row-level
// security) and positioned-json.ts. This file goes once nothing imports it.
export * from './catalog.ts';
export * from './access.ts';
export * from './rls.ts';
export { describeChange } from '../cli/format.ts';
