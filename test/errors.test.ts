// Which errors are the connection's and which are a SQLSTATE (src/errors.ts):
// the worker's log and retry, and the CLI's failure codes, rest on them.
import { describe, expect, it } from 'vitest';
import { describeFailure } from '../src/cli/errors.ts';
import { ConnectionStalledError, InvalidInputError, isConnectionError, MigrationLockTimeoutError, PermgraphError, PermissionDeniedError, sqlStateOf, translateDbError, withRightsNeeded } from '../src/errors.ts';

/** An error as the server sends it (node-pg's DatabaseError carries the SQLSTATE in code). */
const fromServer = (code: string, message = 'x') => Object.assign(new Error(message), { code, severity: 'ERROR' });
/** An error as Node's sockets raise it. */
const fromSystem = (code: string, syscall = 'connect') => Object.assign(new Error(`${syscall} ${code}`), { code, syscall, errno: -1 });

describe('errors', () => {
  it('sqlStateOf reads a SQLSTATE, custom classes included, never a system error code of five letters', () => {
    for (const state of ['57014', 'P0001', 'XX000', 'HV000', 'U0001']) expect(sqlStateOf(fromServer(state))).toBe(state);
    expect(sqlStateOf(fromSystem('EPIPE', 'write'))).toBeUndefined();
    expect(sqlStateOf(fromSystem('ECONNREFUSED'))).toBeUndefined();
    expect(sqlStateOf(new Error('no code'))).toBeUndefined();
  });

  it('sqlStateOf reads the SQLSTATE that permgraph\'s own errors carry, as they carry it in sqlState', () => {
    // What an application catching the API's errors gets: the database's error translated.
    const input = translateDbError(fromServer('23514', 'permgraph: grant tail "x" is an object'));
    expect(input).toBeInstanceOf(InvalidInputError);
    expect((input as InvalidInputError).sqlState).toBe('23514');
    expect(sqlStateOf(input)).toBe('23514');
    const denied = translateDbError(fromServer('42501', 'permission denied for table grants'));
    expect(denied).toBeInstanceOf(PermissionDeniedError);
    expect(sqlStateOf(denied)).toBe('42501');
    // Input refused before any SQL ran has none.
    expect(sqlStateOf(new InvalidInputError('level must be 1 (read), 2 (write) or 3 (manage), got 4'))).toBeUndefined();
  });

  it("migrate giving up on its locks carries 55P03, and the CLI tells it from other failures by its own code", () => {
    const gaveUp = new MigrationLockTimeoutError('migrate gave way 3 time(s) in 2 s …', { table: 'permgraph.nodes', attempts: 3, waitedMs: 2400 }, { cause: fromServer('55P03') });
    expect(gaveUp).toBeInstanceOf(PermgraphError);
    expect(sqlStateOf(gaveUp)).toBe('55P03');
    expect(isConnectionError(gaveUp)).toBe(false);
    expect(translateDbError(gaveUp)).toBe(gaveUp);
    expect(describeFailure(gaveUp)).toEqual({ message: 'migrate gave way 3 time(s) in 2 s …', code: 'lock_timeout', exitCode: 1, sqlState: '55P03' });
    // (a plain PermgraphError, as migrate threw before: the CLI's `failed`, like any command's own reason)
    expect(describeFailure(new PermgraphError('migrate gave way 3 time(s) in 2 s …')).code).toBe('failed');
  });

  it("withRightsNeeded tells PostgreSQL's own refusals with the call's need, once, as the outermost call's; the SQL side's stay as they are", () => {
    // as @databases/pg words it: the server's message, then the statement's code frame after a blank line
    const driver = fromServer('42501', 'permission denied for schema permgraph\n\n> 1 | select permgraph.check($1, $2, $3)\n    |        ^');
    const told = withRightsNeeded(driver, 'check()', 'a login granted permgraph_reader');
    expect(told).toBeInstanceOf(PermissionDeniedError);
    expect(told).toMatchObject({
      message: 'permission denied for schema permgraph: check() needs a login granted permgraph_reader (docs/security.md)',
      postgresMessage: 'permission denied for schema permgraph',
      operation: 'check()',
      needs: 'a login granted permgraph_reader',
      cause: driver,
    });
    expect(sqlStateOf(told)).toBe('42501');
    // translated first (as every library call does), the same
    expect(withRightsNeeded(translateDbError(driver), 'check()', 'a login granted permgraph_reader')).toMatchObject({ message: (told as Error).message, cause: driver });
    // told again for an outer call: that call's need, not both
    const outer = withRightsNeeded(told, '`permgraph check`', 'a login granted permgraph_reader');
    expect(outer).toMatchObject({ message: 'permission denied for schema permgraph: `permgraph check` needs a login granted permgraph_reader (docs/security.md)', cause: driver });
    const owner = withRightsNeeded(fromServer('42501', 'must be owner of function _explain_tree'), 'migrate()', "the schema's owner");
    expect((owner as Error).message).toBe("must be owner of function _explain_tree: migrate() needs the schema's owner (docs/security.md)");
    // the SQL side's own refusals, and every other error, unchanged
    for (const error of [
      fromServer('42501', 'permgraph: change consumer "feed" belongs to role app; other may not use it'),
      translateDbError(fromServer('42501', 'permgraph: change consumer "feed" belongs to role app; other may not use it')),
      new PermissionDeniedError('the nodes query was refused: permission denied for table documents (…)', { cause: fromServer('42501', 'permission denied for table documents') }),
      fromServer('23514', 'permission denied for nothing: a check'),
      new Error('permission denied for table grants'),
    ]) {
      expect(withRightsNeeded(error, 'check()', 'a login granted permgraph_reader')).toBe(error);
    }
  });

  it('isConnectionError: the network, node-pg losing the connection, a stalled connection closed, the server ending or refusing the session for now (class 08, 57P01-57P03); not a statement, nor a login refused for good', () => {
    for (const error of [
      fromSystem('ECONNREFUSED'), fromSystem('ECONNRESET', 'read'), fromSystem('EPIPE', 'write'), fromSystem('ENOTFOUND', 'getaddrinfo'),
      fromSystem('ENETUNREACH'), fromSystem('EHOSTDOWN'), fromSystem('ECONNABORTED'),
      fromSystem('ENOENT'), // a Unix socket whose server is down
      fromServer('08006'), fromServer('08P01'), fromServer('57P01'), fromServer('57P03'),
      new Error('Connection terminated unexpectedly'),
      new Error('Client has encountered a connection error and is not queryable'),
      new ConnectionStalledError('the database stopped answering'), // the worker's watchdog closed it
    ]) {
      expect(isConnectionError(error), error.message).toBe(true);
    }
    for (const error of [
      fromServer('57014'), fromServer('55P03'), fromServer('25006'), fromServer('42501'),
      // logins refused for good: trying again cannot cure them (docs/api.md)
      fromServer('28000'), fromServer('28P01'), fromServer('3D000'),
      fromSystem('ENOENT', 'open'), // a file, not a socket
      new Error('boom'), 'text', null,
    ]) {
      expect(isConnectionError(error), String(error)).toBe(false);
    }
  });
});
