#!/usr/bin/env node
// The development entry: runs the TypeScript CLI (src/cli/main.ts) in this very
// process through tsx's ESM loader, so a checkout needs no build step
// (`npm start`, `npm run permgraph -- …`, the CLI tests). No child process: a
// signal sent to this process reaches the worker itself.
//
// The published package's bin is dist/cli/main.js, compiled JavaScript run by
// plain node (see tsconfig.build.json); this file is not shipped.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
