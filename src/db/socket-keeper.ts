import { Socket } from 'node:net';

/**
 * The sockets of raw node-pg clients (pg-listen's LISTEN connections, the watchdog's probes),
 * kept so that they can be closed at once. node-pg's end() says goodbye and
 * waits for the server to close its side, which a stalled network never
 * does (the OS gives up after minutes). Pass `stream` as the client's
 * `stream` option; a socket destroyed here ends its client: what it was
 * running fails with a connection error and 'end' fires. Under TLS the
 * kept socket is the one beneath the encryption, and closing it closes both.
 */
export class SocketKeeper {
  private readonly sockets = new Set<Socket>();
  private heardFrom = false;

  /** node-pg's `stream` option: a plain socket, as node-pg makes by default, remembered until it closes. */
  readonly stream = (): Socket => {
    const socket = new Socket();
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.once('data', () => (this.heardFrom = true));
    return socket;
  };

  /**
   * Whether the server sent anything on one of the sockets (its first
   * answer to the login, or to the TLS request): the network to it works.
   */
  get heard(): boolean {
    return this.heardFrom;
  }

  /** Closes every socket still open, without a goodbye. */
  destroyAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Waits for `ending` (a client's end()); past timeoutMs, closes the sockets instead of waiting on. */
  async endWithin(ending: Promise<unknown>, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const ended = ending.then(
      () => 'ended' as const,
      () => 'ended' as const,
    );
    try {
      if ((await Promise.race([ended, timeout])) === 'timeout') this.destroyAll();
    } finally {
      clearTimeout(timer);
    }
  }
}
