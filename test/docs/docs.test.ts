// The code blocks of the documentation in docs/ run as written (see doctest.ts).
// Not run here: docs/operations.md and docs/development.md (systemd, containers,
// npm: every block is no-test), docs/cli.md (its examples need files; the
// commands are tested in test/cli/), docs/replicas.md and docs/change-stream.md
// (standby servers and streams of their own, tested in test/replica/ and test/engine/).
import { describeDocument } from './document.ts';

describeDocument('docs/semantics.md', { minimumRun: 10 });
describeDocument('docs/sql.md', { minimumRun: 10 });
describeDocument('docs/security.md', { minimumRun: 5 });
describeDocument('docs/api.md', { minimumRun: 1 });
