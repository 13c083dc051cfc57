import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "./errors.js";

/** The TLS files of an etcd client (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`). */
export interface EtcdTlsFiles {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

/** The files read and checked: PEM bytes as TLS takes them, and the parsed certificates for messages. */
export interface EtcdTls {
  readonly files: EtcdTlsFiles;
  /** The CA bundle (undefined: the system's CAs). */
  readonly ca: Buffer | undefined;
  readonly caCerts: readonly X509Certificate[];
  /** The client certificate and key (both or neither). */
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
  readonly certInfo: X509Certificate | undefined;
}

/**
 * Reads the TLS files and checks what can be checked without etcd: each is
 * readable and PEM, the certificate and key come together, and the key is
 * the certificate's (a mismatch never works, so it fails at start-up, not at
 * the first request). Undefined when no file is given. Throws ConfigError
 * naming the flag and the file.
 */
export function loadEtcdTls(f: EtcdTlsFiles): EtcdTls | undefined {
  if (!f.caFile && !f.certFile && !f.keyFile) return undefined;
  if (!f.certFile !== !f.keyFile) {
    throw new ConfigError(`${f.certFile ? "--etcd-certfile" : "--etcd-keyfile"} given without ${f.certFile ? "--etcd-keyfile" : "--etcd-certfile"}: they go together`, {
      hint: "give both (a client certificate and its key), or neither for server-only TLS with --etcd-cafile",
    });
  }
  const ca = readPem(f.caFile, "--etcd-cafile");
  const caCerts = ca && f.caFile ? parseBundle(ca, f.caFile) : [];
  const cert = readPem(f.certFile, "--etcd-certfile");
  const key = readPem(f.keyFile, "--etcd-keyfile");
  let certInfo: X509Certificate | undefined;
  if (cert && key && f.certFile && f.keyFile) {
    certInfo = parseCert(cert, "--etcd-certfile", f.certFile);
    const k = parseKey(key, f.keyFile);
    if (!certInfo.checkPrivateKey(k)) {
      throw new ConfigError(`--etcd-keyfile ${f.keyFile} does not match --etcd-certfile ${f.certFile} (${describeCert(certInfo)}): the key is not the one the certificate was issued for`, {
        hint: "give the key file that belongs to this certificate, or the certificate that belongs to this key",
      });
    }
  }
  return { files: f, ca, caCerts, cert, key, certInfo };
}

/** "CN=etcd, issued by CN=weft-ca, valid until 2026-11-30T13:08:16.000Z". */
export function describeCert(c: X509Certificate): string {
  return `${oneLine(c.subject)}, issued by ${oneLine(c.issuer)}, valid until ${isoDate(c.validTo)}`;
}

/** Why a certificate is not valid at `now` ("it expired on …"), or undefined. */
export function validityProblem(c: X509Certificate, now = Date.now()): string | undefined {
  if (Date.parse(c.validTo) < now) return `it expired on ${isoDate(c.validTo)} (certificate has expired)`;
  if (Date.parse(c.validFrom) > now) return `it is not valid before ${isoDate(c.validFrom)} (is the clock right?)`;
  return undefined;
}

/** A distinguished name as OpenSSL prints it over several lines, on one line. */
export function oneLine(dn: string): string {
  return dn.split("\n").filter(Boolean).join(", ");
}

function isoDate(text: string): string {
  const t = Date.parse(text);
  return Number.isNaN(t) ? text : new Date(t).toISOString();
}

function readPem(path: string | undefined, flag: string): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ConfigError(`${flag} ${path} cannot be read: ${(e as Error).message}`, { hint: `check the path given to ${flag}` });
  }
}

function parseCert(pem: Buffer, flag: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new ConfigError(`${flag} ${path} is not a PEM certificate: ${(e as Error).message}`, { hint: `${flag} takes a file starting with -----BEGIN CERTIFICATE-----` });
  }
}

function parseBundle(pem: Buffer, path: string): X509Certificate[] {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    throw new ConfigError(`--etcd-cafile ${path} holds no PEM certificate`, { hint: "give the CA certificate etcd's server certificate is signed by (-----BEGIN CERTIFICATE-----)" });
  }
  return blocks.map((b) => parseCert(Buffer.from(b, "latin1"), "--etcd-cafile", path));
}

function parseKey(pem: Buffer, path: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (e) {
    throw new ConfigError(`--etcd-keyfile ${path} is not a PEM private key: ${(e as Error).message}`, {
      hint: "give an unencrypted PEM key (-----BEGIN PRIVATE KEY----- or -----BEGIN EC/RSA PRIVATE KEY-----)",
    });
  }
}
