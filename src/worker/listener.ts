import pgListen, { type Subscriber } from 'pg-listen';
import { CHANGES_CHANNEL, LISTENER_APPLICATION_NAME } from '../constants.ts';
import { clientConfig } from '../db/client-config.ts';
import type { Logger } from '../logger.ts';

/**
 * LISTENs for wake-ups with pg-listen, reconnecting forever. onWake runs on
 * every notification and after every (re)connect, because notifications sent
 * while disconnected are lost and the worker must catch up. The worker's
 * channel by default; the change stream's followers pass theirs.
 */
export async function startListener(
  url: string,
  onWake: () => void,
  logger: Logger,
  { channel = CHANGES_CHANNEL, applicationName = LISTENER_APPLICATION_NAME }: { channel?: string; applicationName?: string } = {},
): Promise<Subscriber> {
  // pg-listen is CommonJS; its factory is the .default export.
  // (TLS on the pool's terms: node-pg's own reading of sslmode differs, src/db/tls.ts)
  const subscriber = pgListen.default(
    await clientConfig(url, applicationName),
    { retryLimit: Infinity, retryTimeout: Infinity, retryInterval: 500, paranoidChecking: 10_000 },
  );
  subscriber.events.on('notification', onWake);
  subscriber.events.on('connected', () => {
    logger.info('listener connected');
    onWake();
  });
  subscriber.events.on('reconnect', (attempt: number) => logger.warn({ attempt }, 'listener reconnecting'));
  subscriber.events.on('error', (error: Error) => logger.error({ err: error }, 'listener error'));
  await subscriber.connect();
  await subscriber.listenTo(channel);
  return subscriber;
}
