// A TCP proxy in front of the test server that can stall like a network
// partition: connections stay open, bytes are taken and held, nothing is
// forwarded and nothing is closed (no RST, no FIN), so that each side only
// learns of it from its own timeouts. A side's goodbye (its half of the
// connection closed) is forwarded as such, and held while stalled: the
// proxy never answers it on the other side's behalf.
import { connect, createServer, type Socket } from 'node:net';

export interface TcpProxy {
  /** The URL given, pointing at the proxy instead. */
  url: string;
  /**
   * Stops forwarding on every open connection. New connections are held
   * too (accepted, then nothing: a connect that never completes its
   * handshake), or with newConnections 'forward' pass as usual: a path
   * that broke for one connection only (a middlebox that lost its state).
   */
  stall(options?: { newConnections?: 'hold' | 'forward' }): void;
  /**
   * Stalls the first connection whose client sends `text` (in one chunk),
   * from that chunk on, which is held too; other connections pass. One
   * connection only: a path that breaks at that moment for that connection.
   */
  stallWhen(text: string): void;
  /**
   * Forwards again, as a healed network delivers what was retransmitted:
   * the bytes held first, then the close of a side that closed meanwhile
   * (whose peer would answer the other side's next packet with a reset).
   */
  resume(): void;
  /**
   * Closes every connection open now, both of its sides at once, as a
   * middlebox that lost them (or a restarted host in between) resets
   * them: each side learns of it at once. New connections pass as before.
   */
  reset(): void;
  /**
   * New connections go to the server of `url` from now on (one name, or one
   * load balancer, that leads to several servers); those open stay where they are.
   */
  retarget(url: string): void;
  /** Connections taken so far. */
  connections(): number;
  close(): Promise<void>;
}

/** One direction of a connection: what it holds while stalled, and whether its sender closed. */
interface Flow {
  from: Socket;
  to: Socket;
  held: Buffer[];
  closed: boolean;
}

/** The host and port of a postgres:// URL. */
function addressOf(url: string): { host: string; port: number } {
  const target = new URL(url);
  return { host: target.hostname, port: Number(target.port || 5432) };
}

/**
 * Starts a proxy to the host and port of `url` (a postgres:// URL) on a free
 * port of `host` (default 127.0.0.1; any 127.x.y.z is local too).
 */
export async function startTcpProxy(url: string, { host = '127.0.0.1' } = {}): Promise<TcpProxy> {
  let upstream = addressOf(url);
  let accepted = 0;
  const links = new Set<{ flows: Flow[]; stalled: boolean }>();
  let holdNew = false;
  let stallOn: Buffer | undefined;

  const deliver = (flow: Flow) => {
    for (const chunk of flow.held.splice(0)) flow.to.write(chunk);
    if (flow.closed) flow.to.end(); // (after the bytes held: end() sends them first)
  };

  // (half-open both ways: a side that ends its half is not answered with an end by the proxy)
  const server = createServer({ allowHalfOpen: true }, (client) => {
    accepted++;
    const toServer = connect({ ...upstream, allowHalfOpen: true });
    const link = { flows: [] as Flow[], stalled: holdNew };
    for (const [from, to] of [[client, toServer], [toServer, client]] as const) {
      const flow: Flow = { from, to, held: [], closed: false };
      link.flows.push(flow);
      from.on('data', (chunk: Buffer) => {
        if (from === client && stallOn !== undefined && chunk.includes(stallOn)) {
          stallOn = undefined;
          link.stalled = true;
        }
        if (link.stalled) flow.held.push(chunk);
        else flow.to.write(chunk);
      });
      // its half ended ('end'), or the whole socket gone ('close': an error, a reset)
      const ended = () => {
        if (flow.closed) return;
        flow.closed = true;
        if (!link.stalled) flow.to.end();
      };
      from.on('end', ended);
      from.on('close', ended);
      from.on('error', () => {}); // (a side's failure reaches the other as its close)
    }
    links.add(link);
    const forget = () => {
      if (client.destroyed && toServer.destroyed) links.delete(link);
    };
    client.on('close', forget);
    toServer.on('close', forget);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no TCP port');
  const proxied = new URL(url);
  proxied.hostname = host;
  proxied.port = String(address.port);

  return {
    url: proxied.toString(),
    stall({ newConnections = 'hold' } = {}) {
      holdNew = newConnections === 'hold';
      for (const link of links) link.stalled = true;
    },
    stallWhen(text) {
      stallOn = Buffer.from(text, 'utf8');
    },
    resume() {
      holdNew = false;
      for (const link of links) {
        if (!link.stalled) continue;
        link.stalled = false;
        link.flows.forEach(deliver);
      }
    },
    reset() {
      for (const link of links) for (const flow of link.flows) flow.from.resetAndDestroy();
    },
    retarget(to) {
      upstream = addressOf(to);
    },
    connections: () => accepted,
    async close() {
      for (const link of links) for (const flow of link.flows) flow.from.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
