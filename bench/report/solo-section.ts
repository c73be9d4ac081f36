// The report's section on the phases run alone (`--stock`, `--capture`,
// `--coldstart`): one change against the commit floor and on a server with
// default settings (issue 12 goal 1, issue 11), the writers' cost of capture
// (issue 12 goal 3) and the CLI's cold start (issue 11).
import { newestPhase, runSource, type Runs } from './provenance.ts';
import { postgresName } from '../lib/environment.ts';
import { formatValue } from './svg.ts';


/** Issue 12, goal 1: a local change's apply, and its write + apply, against a one-row INSERT + COMMIT. */
export const APPLY_VS_COMMIT_GOAL = 4;
export const WRITE_AND_APPLY_VS_COMMIT_GOAL = 6;
/** Issue 12, goal 3: one INSERT of 100,000 grants against the same INSERT with no triggers. */
export const CAPTURE_GOAL = 2;
/** Issue 11: a server left at its defaults (jit on) costs what jit off costs, within the noise of a shared machine. */
export const STOCK_SERVER_GOAL = 1.25;

const ms = (v: number) => (Number.isFinite(v) ? formatValue(v, 'ms') : 'n/a');

function stockLines(runs: Runs): string[] {
  const found = newestPhase(runs, 'stock');
  if (!found) return ['Not measured yet: `npm run bench -- --stock`.'];
  const r = found.result;
  return [
    `${runSource(found.run, found.file)} A second embedded server with no settings at all (${postgresName(r.server.version)}, \`jit=${r.server.jit}\`, \`jit_above_cost=${r.server.jitAboveCost}\`), org small loaded into two databases, one left at the defaults and one with \`jit = off\`; the same single changes (add/remove a member, share/unshare a project) applied through \`applyChanges()\`, interleaved with a one-row INSERT + COMMIT into a table with two indexes (the floor). Median ${r.rowsAltered} rows altered per change.`,
    '',
    '| measured | median | p95 | max | n | ratio |',
    '|---|---:|---:|---:|---:|---|',
    `| apply, database at default settings | ${ms(r.defaultSettings.median)} | ${ms(r.defaultSettings.p95)} | ${ms(r.defaultSettings.max)} | ${r.defaultSettings.n} | ${r.ratio}× jit off (goal ≤ ${STOCK_SERVER_GOAL}×) |`,
    `| apply, database with jit off | ${ms(r.jitOff.median)} | ${ms(r.jitOff.p95)} | ${ms(r.jitOff.max)} | ${r.jitOff.n} | **${r.applyVsFloor}× the floor** (goal ≤ ${APPLY_VS_COMMIT_GOAL}×) |`,
    `| write + apply (the change's commit, then its apply) | ${ms(r.writeAndApply.median)} | ${ms(r.writeAndApply.p95)} | ${ms(r.writeAndApply.max)} | ${r.writeAndApply.n} | **${r.writeAndApplyVsFloor}× the floor** (goal ≤ ${WRITE_AND_APPLY_VS_COMMIT_GOAL}×) |`,
    `| floor: one-row INSERT + COMMIT | ${ms(r.floor.median)} | ${ms(r.floor.p95)} | ${ms(r.floor.max)} | ${r.floor.n} | |`,
  ];
}

function captureLines(runs: Runs): string[] {
  const found = newestPhase(runs, 'capture');
  if (!found) return ['Not measured yet: `npm run bench -- --capture`.'];
  const r = found.result;
  return [
    `${runSource(found.run, found.file)}${r.server ? ` On a server of its own, ${postgresName(r.server.version)} with only \`jit=off\` set (\`shared_buffers=${r.server.settings.shared_buffers ?? '?'}\`: not the main runs' settings).` : ''} One INSERT … SELECT of ${r.grants.toLocaleString('en-US')} grants into \`permgraph.grants\` (validation, edge upkeep, change capture and audit, all per statement) against the same INSERT into a plain table with the same columns, constraints, indexes and foreign keys and no triggers${r.withoutAudit ? ', and into `permgraph.grants` with the audit log off (`set local permgraph.audit = off`, as the schema\'s owner may): what capture costs without the audit rows' : ''}; ${r.permgraph.n} of each, alternating, each rolled back${r.deferredChecksTimed ? ' after `set constraints all immediate` (the grants\' foreign keys are deferred to commit; the clock stops once they are checked)' : ' with the grants\' deferred foreign keys never checked (a run from before they were timed: it flatters permgraph by about 1.3 s)'}.`,
    '',
    '| insert into | median | min | max | ratio |',
    '|---|---:|---:|---:|---|',
    `| permgraph.grants | ${ms(r.permgraph.median)} | ${ms(r.permgraph.min)} | ${ms(r.permgraph.max)} | **${r.ratio}×** (goal ≤ ${CAPTURE_GOAL}×) |`,
    ...(r.withoutAudit
      ? [`| permgraph.grants, audit log off | ${ms(r.withoutAudit.median)} | ${ms(r.withoutAudit.min)} | ${ms(r.withoutAudit.max)} | ${r.ratioWithoutAudit}× |`]
      : []),
    `| plain table, no triggers | ${ms(r.plainTable.median)} | ${ms(r.plainTable.min)} | ${ms(r.plainTable.max)} | |`,
  ];
}

function coldStartLines(runs: Runs): string[] {
  const found = newestPhase(runs, 'coldstart');
  if (!found) return ['Not measured yet: `npm run bench -- --coldstart`.'];
  const r = found.result;
  return [
    `${runSource(found.run, found.file)} Node ${r.node}, ${r.runs} runs of each, alternating.`,
    '',
    '| command | median | min | p95 | × bare node |',
    '|---|---:|---:|---:|---:|',
    ...r.cases.map((c) => `| \`${c.name}\` | ${ms(c.ms.median)} | ${ms(c.ms.min)} | ${ms(c.ms.p95)} | ${c.ratio.toFixed(2)}× |`),
  ];
}

export function soloSection(runs: Runs): string[] {
  return [
    '## One change against the commit floor, on a default server', '', ...stockLines(runs), '',
    '## Writers\' cost of capture', '', ...captureLines(runs), '',
    '## CLI cold start', '', ...coldStartLines(runs),
  ];
}
