// @databases/pg (6.1.0, pinned) searches for a configuration of its own
// the moment it is loaded (@databases/pg-config, through cosmiconfig): a
// "pg" key in package.json, a .pgrc (YAML), .pgrc.json, .pgrc.js,
// .config/pgrc, pg.config.js, … (18 names) in the working directory and in
// each directory above it, up to the home directory. It reads one thing
// from what it finds: which environment variable holds the connection
// string of a pool made without one. permgraph makes none without one
// (openPool is always given its URL), so what the search finds never
// changed what permgraph does; but in the command line it ran before every
// command's first connection, and the command failed on anything found that
// the library could not read, whatever the command was asked: a package.json
// that is not JSON (one being edited), a "pg" key that is not this
// configuration (a version range), a .pgrc that is not YAML. A .js or .cjs
// found was executed. And loading cosmiconfig, its JSON parser and a schema
// library, then searching, took about a tenth of the CPU time of
// `permgraph check` (bench/measure/coldstart.ts's case).
//
// The command line is a process of its own: it gives @databases/pg the
// default configuration without a search (skipPgConfigSearch, as each
// command starts: withContext in src/cli/context.ts, before anything loads
// @databases/pg). The library does not: a program that imports permgraph
// may use @databases/pg's configuration itself, and one copy of
// @databases/pg would serve both.
import Module, { createRequire } from 'node:module';

/** What @databases/pg reads of its configuration when none is found: the variable of the connection string. */
const DEFAULT_PG_CONFIG = { connectionStringEnvironmentVariable: 'DATABASE_URL' };

/**
 * Makes the @databases/pg-config that @databases/pg loads answer its
 * default configuration without searching for one (see above). Call it
 * before @databases/pg is loaded; once it is, this does nothing.
 */
export function skipPgConfigSearch(): void {
  const require = createRequire(import.meta.url);
  const library = require.resolve('@databases/pg');
  if (require.cache[library]) return; // (loaded already: it has searched)
  const configModule = createRequire(library).resolve('@databases/pg-config');
  const module = new Module(configModule);
  module.filename = configModule;
  module.loaded = true;
  module.exports = { getPgConfigSync: () => ({ ...DEFAULT_PG_CONFIG }) };
  require.cache[configModule] = module;
}
