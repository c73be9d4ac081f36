// A stand-in for a PostgreSQL server that speaks just enough of the protocol
// for a LISTEN connection (log in, answer simple queries), and that the test
// steers: it can hold new connections unanswered and drop the ones it has.
// It never answers a client's goodbye (Terminate, then the client's half of
// the connection closed) by closing its own half, as a network that stalls
// at that moment would not: a client that waits for the server to close
// waits until it closes its socket itself. (The server learns of that only
// by writing: after the client's goodbye it sends a notice every 20 ms,
// which a client still waiting reads and ignores.)
import { createServer, type Socket } from 'node:net';

export interface FakePostgres {
  /** postgres:// URL of the server (no TLS). */
  url: string;
  /** Connections the client has not closed. */
  open: Set<Socket>;
  /** Connections taken so far. */
  connections(): number;
  /** New connections are taken and left unanswered until release(). */
  holdNewConnections(): void;
  /** Answers the connections held, and every new one again. */
  release(): void;
  /** How a LISTEN is answered: done, or an error (as a server that refuses it). */
  listenAnswer: 'ok' | 'error';
  /**
   * How many logins from now on are refused as a server that is starting
   * refuses them (FATAL 57P03 "the database system is starting up", then
   * the connection closed); those after are let in.
   */
  startingUp: number;
  /** Closes every connection from the server's side (a restart, a pg_terminate_backend). */
  dropAll(): void;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;

function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

const cstring = (text: string) => Buffer.from(`${text}\0`, 'utf8');
const authenticationOk = () => message('R', Buffer.from([0, 0, 0, 0]));
const readyForQuery = () => message('Z', Buffer.from('I'));
const commandComplete = (tag: string) => message('C', cstring(tag));
const notice = () => message('N', Buffer.concat([Buffer.from('S'), cstring('NOTICE'), Buffer.from('M'), cstring('still here'), Buffer.from([0])]));
const errorOf = (severity: string, code: string, text: string) =>
  message('E', Buffer.concat([Buffer.from('S'), cstring(severity), Buffer.from('C'), cstring(code), Buffer.from('M'), cstring(text), Buffer.from([0])]));
const errorResponse = (text: string) => errorOf('ERROR', 'XX000', text);
const fatal = (code: string, text: string) => errorOf('FATAL', code, text);

export async function startFakePostgres(): Promise<FakePostgres> {
  const open = new Set<Socket>();
  const all = new Set<Socket>();
  const held: (() => void)[] = [];
  let hold = false;

  const serve = (socket: Socket) => {
    let buffer = Buffer.alloc(0);
    let started = false;
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (!started) {
          if (buffer.length < 8) return;
          const length = buffer.readInt32BE(0);
          if (buffer.length < length) return;
          const code = buffer.readInt32BE(4);
          buffer = buffer.subarray(length);
          if (code === SSL_REQUEST) {
            socket.write('N');
            continue;
          }
          if (fake.startingUp > 0) {
            fake.startingUp--;
            socket.end(fatal('57P03', 'the database system is starting up'));
            return;
          }
          started = true;
          socket.write(Buffer.concat([authenticationOk(), readyForQuery()]));
          continue;
        }
        if (buffer.length < 5) return;
        const length = buffer.readInt32BE(1) + 1;
        if (buffer.length < length) return;
        const type = String.fromCharCode(buffer[0]!);
        const body = buffer.subarray(5, length);
        buffer = buffer.subarray(length);
        if (type === 'Q') {
          const query = body.toString('utf8').replace(/\0$/, '');
          const listen = /^listen\b/i.test(query);
          socket.write(Buffer.concat([listen && fake.listenAnswer === 'error' ? errorResponse('LISTEN refused') : commandComplete(listen ? 'LISTEN' : 'SELECT 1'), readyForQuery()]));
        }
        // 'X' (Terminate): no answer, and the connection stays open
      }
    });
  };

  const server = createServer({ allowHalfOpen: true }, (socket) => {
    open.add(socket);
    all.add(socket);
    socket.on('error', () => {});
    socket.once('end', () => {
      const writing = setInterval(() => socket.write(notice()), 20);
      socket.once('close', () => clearInterval(writing));
    });
    socket.once('close', () => open.delete(socket));
    if (hold) {
      socket.pause(); // (what the client sent meanwhile is read on release)
      held.push(() => {
        serve(socket);
        socket.resume();
      });
    } else serve(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };

  const fake: FakePostgres = {
    url: `postgres://someone@127.0.0.1:${port}/somedb`,
    open,
    connections: () => all.size,
    holdNewConnections: () => void (hold = true),
    release() {
      hold = false;
      for (const answer of held.splice(0)) answer();
    },
    listenAnswer: 'ok',
    startingUp: 0,
    dropAll() {
      for (const socket of open) socket.destroy();
    },
    async close() {
      for (const socket of all) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return fake;
}
