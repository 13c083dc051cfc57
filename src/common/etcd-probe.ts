import { connect, isIP, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { WeftError } from "./errors.js";
import { describeCert, loadEtcdTls, oneLine, validityProblem, type EtcdTls, type EtcdTlsFiles } from "./etcd-tls.js";

/** What to probe: the endpoints, and the TLS files the client uses with them. */
export interface ProbeTarget extends EtcdTlsFiles {
  readonly endpoints: readonly string[];
}

/**
 * etcd failed and the probe says why, per endpoint (a command's error; the
 * agent reports the same through its "waiting for etcd").
 */
export class EtcdUnreachableError extends WeftError {
  readonly code = "WEFT_ETCD_UNREACHABLE";
  constructor(message: string, cause: unknown) {
    super(message, { recoverable: true, cause });
  }
}

/**
 * Why each etcd endpoint cannot be used, in words: name resolution, TCP
 * connect (refused, unreachable, timed out), then for https:// a TLS
 * handshake with the client's own CA, certificate and key (a server
 * certificate the CA does not sign, an expired one on either side, a client
 * certificate missing or refused, plain HTTP on a TLS port and the reverse),
 * and etcd's /health. The etcd client reports one error for all endpoints
 * together; this says which one fails and how to fix it, naming the flag.
 */
export async function probeEndpoints(target: readonly string[] | ProbeTarget, timeoutMs = 1000): Promise<string[]> {
  const t: ProbeTarget = isEndpointList(target) ? { endpoints: target } : target;
  let tls: EtcdTls | undefined;
  try {
    tls = loadEtcdTls(t);
  } catch (e) {
    return [(e as Error).message]; // the files themselves are wrong: that is the answer for every endpoint
  }
  return Promise.all(t.endpoints.map(async (e) => `${e}: ${await probe(e, tls, timeoutMs)}`));
}

function isEndpointList(t: readonly string[] | ProbeTarget): t is readonly string[] {
  return Array.isArray(t);
}

async function probe(endpoint: string, tls: EtcdTls | undefined, timeoutMs: number): Promise<string> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return "not a URL";
  }
  const port = Number(url.port || (url.protocol === "https:" ? 443 : 2379));
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (url.protocol === "https:") {
    const why = await probeTls(host, port, tls, timeoutMs);
    // A handshake cut short: perhaps the port speaks plain HTTP.
    if (why.startsWith(HANDSHAKE_CUT) && (await speaksPlainEtcd(host, port, timeoutMs))) {
      return `the server does not speak TLS on this port but answers plain HTTP: use http://${url.host} (and no --etcd-cafile/--etcd-certfile/--etcd-keyfile)`;
    }
    return why;
  }
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: timeoutMs });
    s.once("connect", () => void health(s, host, timeoutMs).then(async (why) => {
      // Silence to plain HTTP: a TLS port answers a ClientHello.
      if (why.startsWith(NO_ANSWER) && (await speaksTls(host, port, timeoutMs))) {
        why = `the server speaks TLS on this port: use https://${url.host} with --etcd-cafile (and --etcd-certfile/--etcd-keyfile if it wants a client certificate)`;
      }
      resolve(`TCP connects; ${why}`);
    }));
    s.once("timeout", () => {
      s.destroy();
      resolve(`no answer within ${timeoutMs} ms (host down or traffic dropped)`);
    });
    s.once("error", (e: NodeJS.ErrnoException) => {
      s.destroy();
      resolve(socketError(e, host));
    });
  });
}

function probeTls(host: string, port: number, tls: EtcdTls | undefined, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let handshaken = false;
    const s: TLSSocket = tlsConnect({
      host, port, timeout: timeoutMs, ALPNProtocols: ["http/1.1"],
      ...(isIP(host) ? {} : { servername: host }),
      // Checked below, to say what is wrong rather than fail.
      rejectUnauthorized: false,
      ...(tls?.ca ? { ca: tls.ca } : {}),
      ...(tls?.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
    });
    const done = (why: string): void => {
      s.destroy();
      resolve(why);
    };
    s.once("secureConnect", () => {
      handshaken = true;
      if (!s.authorized) {
        done(`TLS: ${serverCertProblem(s, host, tls)}`);
        return;
      }
      // With TLS 1.3 the server checks our certificate after the handshake: its verdict comes with the first reply.
      void health(s, host, timeoutMs, tls).then((why) => resolve(why.startsWith("TLS:") ? why : `TLS handshake ok; ${why}`));
    });
    s.once("timeout", () => done(`no answer within ${timeoutMs} ms (host down or traffic dropped)`));
    s.once("error", (e: NodeJS.ErrnoException) => {
      if (handshaken) return; // health() reports it
      const why = tlsError(e, host, port, tls);
      done(why ?? (e.code === "ECONNRESET" || e.code === "EPIPE" ? `${HANDSHAKE_CUT} (${e.code})` : socketError(e, host)));
    });
    s.once("end", () => !handshaken && done(`${HANDSHAKE_CUT} (closed)`));
  });
}

const NO_ANSWER = "the server closed the connection without answering";
const HANDSHAKE_CUT = "the server ended the connection during the TLS handshake";

/** True when host:port completes (or refuses with an alert) a TLS handshake. */
function speaksTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host, port, timeout: timeoutMs, rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) });
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.once("secureConnect", () => done(true));
    s.once("error", (e: NodeJS.ErrnoException) => done(/alert/.test(e.message)));
    s.once("timeout", () => done(false));
  });
}

/** True when host:port answers a plain-HTTP GET /health as etcd does. */
function speaksPlainEtcd(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: timeoutMs });
    s.once("connect", () => void health(s, host, timeoutMs).then((why) => resolve(why.startsWith("etcd answers"))));
    s.once("error", () => resolve(false));
    s.once("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** GET /health on a connected socket: what etcd says, or why the server refused us. */
function health(s: Socket, host: string, timeoutMs: number, tls?: EtcdTls): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const done = (why: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`the server did not answer GET /health within ${timeoutMs} ms (is this etcd's client port?)`), timeoutMs);
    s.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (text.length > 4096 || /\r\n\r\n[\s\S]*\}/.test(text)) done(healthAnswer(text, host, s));
    });
    s.once("end", () => done(text ? healthAnswer(text, host, s) : `${NO_ANSWER} GET /health`));
    s.once("error", (e: NodeJS.ErrnoException) => done(tlsError(e, host, 0, tls) ?? socketError(e, host)));
    s.setTimeout(0);
    s.write(`GET /health HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  });
}

function healthAnswer(text: string, host: string, s: Socket): string {
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
  const body = text.split("\r\n\r\n").slice(1).join("").trim();
  if (status === "400" && /HTTPS server/i.test(body)) {
    const port = s.remotePort ?? "";
    return `the server speaks TLS on this port: use https://${host}:${port} with --etcd-cafile (and --etcd-certfile/--etcd-keyfile if it wants a client certificate)`;
  }
  if (!status) return "the server does not answer HTTP as etcd does (is this etcd's client port?)";
  if (status === "200" && /"health"\s*:\s*"true"/.test(body)) {
    return "etcd answers (/health: true), so the request itself failed: see the error (permissions, authentication, a timeout)";
  }
  return `etcd answers but says it is not healthy (HTTP ${status} ${body.slice(0, 200)}): no leader? see etcd's log`;
}

/** The server's certificate is not accepted (rejectUnauthorized is off, so the handshake completed): why, and what to fix. */
function serverCertProblem(s: TLSSocket, host: string, tls: EtcdTls | undefined): string {
  const code = String(s.authorizationError ?? "");
  const peer = s.getPeerX509Certificate();
  const what = `etcd's server certificate${peer ? ` (${describeCert(peer)})` : ""}`;
  const caFile = tls?.files.caFile;
  const ca = caFile ? `the CA in --etcd-cafile ${caFile} (${tls?.caCerts.map((c) => oneLine(c.subject)).join("; ")})` : "any CA this system trusts (no --etcd-cafile given)";
  switch (code) {
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return `${what} is not signed by ${ca}: ${VERIFY_TEXT[code] ?? code} (wrong --etcd-cafile?)`;
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return `${what}: ${(peer && validityProblem(peer)) ?? code}; renew etcd's certificate (its --cert-file)`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `${what} is not valid for the name ${host} (it names ${peer?.subjectAltName ?? "nothing"}): use an endpoint with one of those names, or reissue it with ${host} in its subjectAltName`;
    default:
      return `${what} is not accepted: ${code}`;
  }
}

const VERIFY_TEXT: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unable to verify the first certificate",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
  UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
  SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
  CERT_SIGNATURE_FAILURE: "certificate signature failure",
};

/** A TLS error in words (undefined: not a TLS error). `port` 0: after the handshake. */
function tlsError(e: NodeJS.ErrnoException, host: string, port: number, tls: EtcdTls | undefined): string | undefined {
  const code = e.code ?? "";
  const alert = /alert (.+?)(:|$)/.exec(e.message)?.[1]?.trim();
  if (/^ERR_SSL_.*ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|CERTIFICATE_EXPIRED|CERTIFICATE_UNKNOWN|UNKNOWN_CA|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|CERTIFICATE_REVOKED)$/.test(code)) {
    return `TLS: ${clientCertProblem(tls)} (the server's alert: ${alert ?? code})`;
  }
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || /wrong version number|packet length too long/.test(e.message)) {
    return `the server does not speak TLS on this port: use http://${host}${port ? `:${port}` : ""} (and no --etcd-cafile/--etcd-certfile/--etcd-keyfile)`;
  }
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_") || code === "EPROTO") return `TLS: ${e.message.split("\n")[0]}`;
  return undefined;
}

/** The server refused us during or after the handshake: what about our certificate it is likely to be. */
function clientCertProblem(tls: EtcdTls | undefined): string {
  const f = tls?.files;
  if (!tls?.certInfo || !f?.certFile) {
    return "the server requires a client certificate: give --etcd-certfile and --etcd-keyfile (a certificate signed by the CA etcd trusts, its --trusted-ca-file)";
  }
  const bad = validityProblem(tls.certInfo);
  if (bad) return `the server refused the client certificate --etcd-certfile ${f.certFile}: ${bad}; renew it`;
  return `the server refused the client certificate --etcd-certfile ${f.certFile} (${describeCert(tls.certInfo)}): is it signed by the CA etcd trusts (its --trusted-ca-file), for client authentication?`;
}

function socketError(e: NodeJS.ErrnoException, host: string): string {
  const what: Record<string, string> = {
    ECONNREFUSED: "connection refused (nothing listens on that port)",
    ECONNRESET: "the server reset the connection",
    ENOTFOUND: `cannot resolve the host name ${host}`,
    EAI_AGAIN: `cannot resolve the host name ${host} (DNS not answering)`,
    EHOSTUNREACH: "host unreachable",
    ENETUNREACH: "network unreachable",
  };
  return what[e.code ?? ""] ?? e.message;
}
