// README.md: every code block runs as written, or is tagged no-test (see doctest.ts).
import { describeDocument } from './document.ts';

describeDocument('README.md', { minimumRun: 5 });
