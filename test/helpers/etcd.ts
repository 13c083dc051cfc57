import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EtcdServer } from "../../src/harness/etcd.js";
import { Pki, type CertFiles } from "../../src/harness/pki.js";

/** A real etcd for one test file, in a temporary directory; `close` removes both. */
export async function startEtcd(): Promise<{ etcd: EtcdServer; dir: string; close: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "weft-etcd-"));
  const etcd = await EtcdServer.start({ dir });
  return {
    etcd,
    dir,
    close: async () => {
      await etcd.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TlsEtcd {
  readonly etcd: EtcdServer;
  readonly pki: Pki;
  /** A client certificate the server accepts (CN "root"). */
  readonly client: CertFiles;
  /** The flags a weft command needs to reach it: endpoint, CA, client certificate and key. */
  readonly flags: string[];
  close(): Promise<void>;
}

/**
 * A real etcd that speaks only TLS on https://127.0.0.1:<port> and requires a
 * client certificate signed by its CA (--client-cert-auth), with certificates
 * made by openssl in a temporary directory; `close` removes everything.
 */
export async function startTlsEtcd(): Promise<TlsEtcd> {
  const pki = await Pki.create();
  const server = await pki.issue("etcd-server", { usage: "server", ips: ["127.0.0.1"], dns: ["localhost"] });
  const client = await pki.issue("root", { usage: "client", cn: "root" });
  const etcd = await EtcdServer.start({ dir: join(pki.dir, "etcd"), tls: { cert: server.cert, key: server.key, trustedCa: pki.ca.cert, clientCertAuth: true } });
  return {
    etcd, pki, client,
    flags: ["--etcd-endpoints", etcd.endpoint, "--etcd-cafile", pki.ca.cert, "--etcd-certfile", client.cert, "--etcd-keyfile", client.key],
    close: async () => {
      await etcd.close();
      pki.close();
    },
  };
}
