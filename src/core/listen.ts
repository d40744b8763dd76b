import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UserError } from './errors.js';

/** Starts `server` on host:port; the usual failures become UserErrors that say what to do. */
export async function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      if (e.code === 'EADDRINUSE') reject(new UserError(`port ${port} on ${host} is already in use`, 'pick another with --port (0 picks a free one)'));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') reject(new UserError(`cannot bind ${host}: no such local address`));
      else if (e.code === 'EACCES') reject(new UserError(`not allowed to bind ${host}:${port}`, 'ports below 1024 need privileges; pick another with --port'));
      else reject(e);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
  return server.address() as AddressInfo;
}

/** How a bound host is written in a URL (IPv6 in brackets). */
export function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** Resolves on the first SIGINT or SIGTERM (saying so on stderr as `<who>: SIGTERM, stopping`), for servers. */
export function untilStopped(who: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.stderr.write(`\n${who}: ${signal}, stopping\n`);
      resolve();
    };
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    process.once('SIGINT', onInt);
    process.once('SIGTERM', onTerm);
  });
}
