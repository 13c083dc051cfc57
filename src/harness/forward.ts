import { createConnection, createServer, type AddressInfo, type Socket } from "node:net";

export interface Forwarder {
  readonly port: number;
  /** Cuts every connection and refuses new ones until resume(): a network partition. */
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1:<random> and pipes every connection to a unix
 * socket. Unix sockets are files, visible across network namespaces, so
 * this reaches a server that lives in another namespace.
 */
export async function forwardTcpToUnix(socketPath: string): Promise<Forwarder> {
  const conns = new Set<Socket>();
  let paused = false;
  const server = createServer((c) => {
    if (paused) {
      c.destroy();
      return;
    }
    const u = createConnection(socketPath);
    conns.add(c).add(u);
    c.pipe(u).pipe(c);
    const drop = (): void => {
      c.destroy();
      u.destroy();
      conns.delete(c);
      conns.delete(u);
    };
    c.on("error", drop).on("close", drop);
    u.on("error", drop).on("close", drop);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    pause: () => {
      paused = true;
      conns.forEach((s) => s.destroy());
    },
    resume: () => {
      paused = false;
    },
    close: () => new Promise<void>((r) => {
      conns.forEach((s) => s.destroy());
      server.close(() => r());
    }),
  };
}
