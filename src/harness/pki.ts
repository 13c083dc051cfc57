import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../common/exec.js";

/** A certificate and its private key, as PEM files. */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

/** A certificate authority: its self-signed certificate and key. */
export interface Ca extends CertFiles {
  readonly name: string;
}

export interface IssueOptions {
  /** The subject's CN (etcd takes the user name from a client certificate's CN). Default: the file name. */
  readonly cn?: string;
  /** The CA that signs it (default: the Pki's own). */
  readonly ca?: Ca;
  /** "server" (serverAuth, and clientAuth as etcd's own gateway uses it), or "client" (clientAuth). */
  readonly usage: "server" | "client";
  /** Subject alternative names: IP addresses and DNS names the server answers as. */
  readonly ips?: readonly string[];
  readonly dns?: readonly string[];
  /** Valid until yesterday: a certificate that has expired. */
  readonly expired?: boolean;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/**
 * Certificates for tests and benchmarks, made by the real `openssl` (argv
 * arrays, never a shell) in a temporary directory: a CA, and server and
 * client certificates it signs; more CAs, expired certificates and any CN on
 * request. Keys are P-256 EC in PKCS#8, as both etcd (Go) and Node read them.
 */
export class Pki {
  private constructor(readonly dir: string, readonly ca: Ca) {}

  /** A CA named "weft-test-ca" in `dir` (made if missing; default a new temporary directory). */
  static async create(dir = mkdtempSync(join(tmpdir(), "weft-pki-"))): Promise<Pki> {
    mkdirSync(dir, { recursive: true });
    return new Pki(dir, await makeCa(dir, "ca", "weft-test-ca"));
  }

  /** Another CA (e.g. one the server does not trust), with files `<name>.pem` and `<name>.key`. */
  newCa(name: string): Promise<Ca> {
    return makeCa(this.dir, name, `weft-test-${name}`);
  }

  /** A certificate signed by `opts.ca` (default the Pki's CA), as `<name>.pem` and `<name>.key`. */
  async issue(name: string, opts: IssueOptions): Promise<CertFiles> {
    if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`Pki.issue: bad file name "${name}"`);
    const ca = opts.ca ?? this.ca;
    const f = { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}.key`) };
    const csr = join(this.dir, `${name}.csr`);
    const san = [...(opts.ips ?? []).map((a) => `IP:${a}`), ...(opts.dns ?? []).map((d) => `DNS:${d}`)];
    await run([
      "openssl", "req", "-new", ...EC, "-keyout", f.key, "-out", csr, "-subj", `/CN=${opts.cn ?? name}`,
      "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
      "-addext", `extendedKeyUsage=${opts.usage === "server" ? "serverAuth,clientAuth" : "clientAuth"}`,
      ...(san.length > 0 ? ["-addext", `subjectAltName=${san.join(",")}`] : []),
    ]);
    // -days -1: notAfter a day before notBefore (now), so the certificate has expired.
    await run([
      "openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", `0x${randomBytes(8).toString("hex")}`,
      "-days", opts.expired ? "-1" : "2", "-copy_extensions", "copyall", "-out", f.cert,
    ]);
    rmSync(csr, { force: true });
    return f;
  }

  /** Removes the directory and every file in it. */
  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function makeCa(dir: string, file: string, cn: string): Promise<Ca> {
  const ca = { name: cn, cert: join(dir, `${file}.pem`), key: join(dir, `${file}.key`) };
  await run([
    "openssl", "req", "-x509", ...EC, "-keyout", ca.key, "-out", ca.cert, "-days", "2", "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return ca;
}
