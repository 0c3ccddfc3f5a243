// sslscan (Debian package `sslscan`): what a TLS endpoint accepts and which certificate it
// shows. Findings: old protocols (SSLv2/3 high, TLS 1.0/1.1 medium), weak cipher suites
// (no encryption, no authentication, export-grade: high; medium-strength: medium),
// Heartbleed, insecure renegotiation, TLS compression, and certificate problems (expired,
// not yet valid, expiring within 30 days, self-signed, short key, SHA-1/MD5 signature, and a
// name that does not match when the target is a host name: sslscan does not check that, we
// do with node:tls's own rules).
//
// One process per port: sslscan 2.0.7 scans only the last host given on its command line, and
// its --targets file stops at the first unreachable entry (both seen on this machine).
import * as v from 'valibot';
import { XMLParser } from 'fast-xml-parser';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { fullReport, type ReportFinding, type Severity } from '../report.ts';
import { detectSystemBinary, findExecutable } from './binaries.ts';
import { hostOf } from './nmap.ts';
import { parseStepConfig, tail, ToolError, type ParseContext, type ToolAdapter, type ToolResult, type UpstreamSteps } from './tool.ts';

const Port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));
const STARTTLS = ['ftp', 'imap', 'irc', 'ldap', 'mysql', 'pop3', 'psql', 'smtp', 'xmpp'] as const;

const Options = v.strictObject({
  port: v.optional(Port),
  ports: v.optional(v.pipe(v.array(Port), v.minLength(1), v.maxLength(50))),
  /** Scan the TLS ports an earlier step found (its output.tls_ports), e.g. "infra" for nmap. */
  ports_from: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200))),
  sni_name: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$/, 'must be a host name'))),
  starttls: v.optional(v.picklist(STARTTLS, `must be one of ${STARTTLS.join(', ')}`)),
  /** Socket timeout in seconds (sslscan's default is 3). */
  connect_timeout: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(60))),
});
type Options = v.InferOutput<typeof Options>;

const options = (stepConfig: unknown): Options => {
  const o = parseStepConfig('sslscan', Options, stepConfig);
  const given = [o.port, o.ports, o.ports_from].filter((x) => x !== undefined).length;
  if (given > 1) throw new ToolError('invalid_config', 'sslscan: give one of step_config.port, ports and ports_from');
  return o;
};

function portsOf(x: unknown): number[] {
  return Array.isArray(x) ? x.filter((p): p is number => Number.isInteger(p) && p >= 1 && p <= 65535) : [];
}

/**
 * Which ports to scan: the step's own (port, ports, ports_from), else the target's (a URL's
 * port, `host:port`), else every TLS port an earlier step reported, else 443.
 */
export function sslscanPorts(o: Options, targetPort: number | null, upstream: UpstreamSteps = {}): number[] {
  if (o.port !== undefined) return [o.port];
  if (o.ports) return [...new Set(o.ports)];
  if (o.ports_from !== undefined) {
    const step = upstream[o.ports_from];
    if (!step) throw new ToolError('invalid_config', `sslscan: step_config.ports_from names step "${o.ports_from}", which is not in this run`);
    const ports = portsOf((step.output as Record<string, unknown> | undefined)?.tls_ports);
    if (ports.length === 0) throw new ToolError('invalid_config', `sslscan: step "${o.ports_from}" reported no tls_ports`);
    return [...new Set(ports)];
  }
  if (targetPort !== null) return [targetPort];
  const found = Object.values(upstream).flatMap((s) => portsOf((s.output as Record<string, unknown> | undefined)?.tls_ports));
  return found.length > 0 ? [...new Set(found)].sort((a, b) => a - b) : [443];
}

const xml = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseAttributeValue: false,
  parseTagValue: false,
  isArray: (name, _jpath, _leaf, isAttribute) => !isAttribute && ['ssltest', 'protocol', 'cipher', 'heartbleed', 'certificate', 'error', 'group'].includes(name),
});

type Attr = Record<string, string>;
type ShortCertificate = {
  type?: string;
  'signature-algorithm'?: string;
  pk?: Attr;
  subject?: string;
  altnames?: string;
  issuer?: string;
  'self-signed'?: string;
  'not-valid-before'?: string;
  'not-valid-after'?: string;
  expired?: string;
};
type SslTest = {
  host: string;
  sniname?: string;
  port: string;
  protocol?: Attr[];
  cipher?: Attr[];
  heartbleed?: Attr[];
  renegotiation?: Attr;
  compression?: Attr;
  certificates?: { certificate?: ShortCertificate[] } | '';
};

export const sslscan: ToolAdapter = {
  name: 'sslscan',
  scans: 'host',
  detect: () => detectSystemBinary('sslscan', 'sslscan', ['--version'], /(\d+\.\d+\.\d+)/, 'apt-get install -y sslscan'),
  checkConfig: (stepConfig) => void options(stepConfig),

  command(stepConfig, target, workdir, upstream) {
    const o = options(stepConfig);
    const host = hostOf(target, 'sslscan');
    const ports = sslscanPorts(o, target.kind === 'host' ? target.port : null, upstream);
    const bin = findExecutable('sslscan') ?? 'sslscan';
    return ports.map((port) => {
      const argv = [bin, '--xml=-', '--no-colour'];
      if (o.sni_name) argv.push(`--sni-name=${o.sni_name}`);
      if (o.starttls) argv.push(`--starttls-${o.starttls}`);
      if (o.connect_timeout) argv.push(`--timeout=${o.connect_timeout}`);
      argv.push(`${isIP(host) === 6 ? `[${host}]` : host}:${port}`);
      return { argv, cwd: workdir };
    });
  },

  parse(stdout, stderr, exitCode, ctx) {
    return parseSslscan(stdout, stderr, exitCode, ctx);
  },
};

const WEAK_CIPHER: Record<string, { severity: Severity; why: string }> = {
  null: { severity: 'high', why: 'no encryption' },
  anonymous: { severity: 'high', why: 'no server authentication (anyone in the middle can impersonate the server)' },
  weak: { severity: 'high', why: 'export-grade or otherwise weak encryption' },
  medium: { severity: 'medium', why: 'medium-strength encryption (RC4, 3DES, DES or similar)' },
};

const DAY_MS = 86_400_000;

export function parseSslscan(stdout: string, stderr: string, exitCode: number, ctx: ParseContext): ToolResult {
  let doc: { document?: { version?: string; ssltest?: SslTest[]; error?: string[] } };
  try {
    doc = xml.parse(stdout) as typeof doc;
  } catch (err) {
    throw new ToolError('output_invalid', `sslscan wrote no XML (exit ${exitCode}): ${(err as Error).message}; ${tail(stderr)}`);
  }
  const d = doc.document;
  if (!d) throw new ToolError(exitCode === 0 ? 'output_invalid' : 'tool_failed', `sslscan (exit ${exitCode}) wrote no results: ${tail(stderr) || tail(stdout, 300)}`, exitCode);
  const tests = d.ssltest ?? [];
  if (tests.length === 0) {
    throw new ToolError('target_unreachable', `sslscan: ${(d.error ?? []).join('; ') || tail(stderr) || 'no endpoint was scanned'}`);
  }
  const expectedName = ctx.target.kind === 'host' && isIP(ctx.target.host) === 0 ? ctx.target.host : null;
  const findings: ReportFinding[] = [];
  const endpoints = tests.map((t) => endpoint(t, ctx.now, expectedName, findings));
  return {
    format: 'report',
    document: fullReport({ name: 'sslscan', version: d.version }, ctx.now, findings),
    output: {
      endpoints,
      tls_ports: endpoints.filter((e) => e.protocols.length > 0).map((e) => e.port),
      weak_protocols: [...new Set(endpoints.flatMap((e) => e.weak_protocols))],
      weak_ciphers: [...new Set(endpoints.flatMap((e) => e.weak_ciphers))],
    },
  };
}

function protocolName(p: Attr): string {
  return p.type === 'ssl' ? `SSLv${p.version}` : `TLSv${p.version}`;
}

function endpoint(t: SslTest, now: Date, expectedName: string | null, findings: ReportFinding[]) {
  const host = t.host;
  const port = Number(t.port);
  const at = `${host}:${port}`;
  const add = (f: Omit<ReportFinding, 'location' | 'fingerprint'> & { key: string }) => {
    const { key, ...rest } = f;
    findings.push({ ...rest, location: { host, port }, fingerprint: `sslscan:${at}:${key}` });
  };

  const enabled = (t.protocol ?? []).filter((p) => p.enabled === '1').map(protocolName);
  const weakProtocols = enabled.filter((p) => ['SSLv2', 'SSLv3', 'TLSv1.0', 'TLSv1.1'].includes(p));
  for (const p of weakProtocols) {
    const ssl = p.startsWith('SSL');
    add({
      key: `protocol:${p}`, type: 'misconfiguration', severity: ssl ? 'high' : 'medium', rule_id: 'weak-protocol',
      title: `${p} enabled on ${at}`,
      description: ssl
        ? `${at} accepts ${p}, which is broken (POODLE, DROWN). Disable it.`
        : `${at} accepts ${p}, deprecated by RFC 8996 (no modern AEAD ciphers, SHA-1 in the handshake). Allow TLS 1.2 and 1.3 only.`,
      properties: { protocol: p },
    });
  }

  const weakByCipher = new Map<string, { strength: string; bits: string; versions: string[] }>();
  for (const c of t.cipher ?? []) {
    if (!WEAK_CIPHER[c.strength]) continue;
    const entry = weakByCipher.get(c.cipher) ?? { strength: c.strength, bits: c.bits, versions: [] };
    entry.versions.push(c.sslversion);
    weakByCipher.set(c.cipher, entry);
  }
  for (const [cipher, w] of weakByCipher) {
    const kind = WEAK_CIPHER[w.strength];
    add({
      key: `cipher:${cipher}`, type: 'misconfiguration', severity: kind.severity, rule_id: 'weak-cipher',
      title: `Weak cipher suite ${cipher} accepted on ${at}`,
      description: `${at} accepts ${cipher} (${kind.why}) with ${w.versions.join(', ')}.`,
      properties: { cipher, strength: w.strength, bits: Number(w.bits), protocols: w.versions },
    });
  }

  if ((t.heartbleed ?? []).some((h) => h.vulnerable === '1')) {
    add({
      key: 'heartbleed', type: 'vulnerability', severity: 'critical', rule_id: 'heartbleed',
      title: `Heartbleed (CVE-2014-0160) on ${at}`,
      description: `${at} answers malformed heartbeats with its memory (keys, session data). Upgrade OpenSSL and replace the keys.`,
      vulnerability: { cve_id: 'CVE-2014-0160', cwe: 'CWE-126' },
      references: ['https://nvd.nist.gov/vuln/detail/CVE-2014-0160'],
      properties: { protocols: (t.heartbleed ?? []).filter((h) => h.vulnerable === '1').map((h) => h.sslversion) },
    });
  }
  if (t.renegotiation?.supported === '1' && t.renegotiation.secure !== '1') {
    add({
      key: 'renegotiation', type: 'vulnerability', severity: 'medium', rule_id: 'insecure-renegotiation',
      title: `Insecure TLS renegotiation on ${at}`,
      description: `${at} allows renegotiation without RFC 5746, which lets a man in the middle prefix requests (CVE-2009-3555).`,
      vulnerability: { cve_id: 'CVE-2009-3555' },
    });
  }
  if (t.compression?.supported === '1') {
    add({
      key: 'compression', type: 'vulnerability', severity: 'medium', rule_id: 'tls-compression',
      title: `TLS compression enabled on ${at} (CRIME)`,
      description: `${at} compresses TLS records, which leaks secrets such as cookies (CRIME, CVE-2012-4929).`,
      vulnerability: { cve_id: 'CVE-2012-4929' },
    });
  }

  const certs = typeof t.certificates === 'object' ? (t.certificates.certificate ?? []) : [];
  const cert = certs.find((c) => c.type === 'short') ?? certs[0];
  let certificate: Record<string, unknown> | null = null;
  if (cert) {
    const notAfter = cert['not-valid-after'] ? new Date(cert['not-valid-after']) : null;
    const notBefore = cert['not-valid-before'] ? new Date(cert['not-valid-before']) : null;
    const keyType = cert.pk?.type ?? null;
    const keyBits = cert.pk?.bits ? Number(cert.pk.bits) : null;
    const signature = (cert['signature-algorithm'] ?? '').trim();
    const subject = cert.subject?.trim() ?? '';
    certificate = {
      subject, issuer: cert.issuer?.trim() ?? null, altnames: cert.altnames?.trim() ?? null, self_signed: cert['self-signed'] === 'true',
      expired: cert.expired === 'true', not_before: iso(notBefore), not_after: iso(notAfter),
      key_type: keyType, key_bits: keyBits, signature_algorithm: signature || null,
    };
    const certProps = { subject, issuer: certificate.issuer, not_before: certificate.not_before, not_after: certificate.not_after };

    if (cert.expired === 'true' || (notAfter && notAfter.getTime() < now.getTime())) {
      add({
        key: 'certificate:expired', type: 'misconfiguration', severity: 'high', rule_id: 'certificate-expired',
        title: `Expired TLS certificate on ${at}`,
        description: `The certificate of ${at} (${subject}) expired on ${iso(notAfter) ?? 'an unknown date'}; clients refuse it or learn to ignore errors.`,
        properties: certProps,
      });
    } else if (notAfter && notAfter.getTime() - now.getTime() < 30 * DAY_MS) {
      add({
        key: 'certificate:expiring', type: 'misconfiguration', severity: 'low', rule_id: 'certificate-expiring',
        title: `TLS certificate on ${at} expires within 30 days`,
        description: `The certificate of ${at} (${subject}) expires on ${iso(notAfter)}.`,
        properties: certProps,
      });
    }
    if (notBefore && notBefore.getTime() > now.getTime()) {
      add({
        key: 'certificate:not-yet-valid', type: 'misconfiguration', severity: 'medium', rule_id: 'certificate-not-yet-valid',
        title: `TLS certificate on ${at} is not valid yet`,
        description: `The certificate of ${at} (${subject}) is valid only from ${iso(notBefore)}.`,
        properties: certProps,
      });
    }
    if (cert['self-signed'] === 'true') {
      add({
        key: 'certificate:self-signed', type: 'misconfiguration', severity: 'medium', rule_id: 'certificate-self-signed',
        title: `Self-signed TLS certificate on ${at}`,
        description: `${at} shows a self-signed certificate (${subject}): clients cannot verify the server, so they are trained to accept impostors.`,
        properties: certProps,
      });
    }
    // sslscan gives RSA/DSA/DH key sizes in bits and EC keys in security bits (P-256: 128).
    const short = keyBits !== null && (keyType === 'EC' ? keyBits < 112 : keyBits < 2048);
    if (short) {
      add({
        key: 'certificate:short-key', type: 'misconfiguration', severity: keyType !== 'EC' && keyBits! < 1024 ? 'critical' : 'high',
        rule_id: 'certificate-short-key',
        title: `Short ${keyType ?? ''} key (${keyBits} bits) in the TLS certificate on ${at}`.replace('  ', ' '),
        description: `The certificate of ${at} has a ${keyBits}-bit ${keyType} key; at least 2048 bits (RSA) or a 224-bit curve is needed.`,
        properties: { ...certProps, key_type: keyType, key_bits: keyBits },
      });
    }
    if (/md5|sha1(?!\d)|sha-1/i.test(signature)) {
      add({
        key: 'certificate:weak-signature', type: 'misconfiguration', severity: 'medium', rule_id: 'certificate-weak-signature',
        title: `TLS certificate on ${at} is signed with ${signature}`,
        description: `${signature} signatures can be forged (chosen-prefix collisions); reissue the certificate with SHA-256.`,
        properties: { ...certProps, signature_algorithm: signature },
      });
    }
    if (expectedName) {
      const mismatch = checkServerIdentity(expectedName, {
        subject: { CN: subject.replace(/^\/?CN=/, '') }, subjectaltname: cert.altnames?.trim(),
      } as unknown as PeerCertificate);
      if (mismatch) {
        add({
          key: 'certificate:name-mismatch', type: 'misconfiguration', severity: 'medium', rule_id: 'certificate-name-mismatch',
          title: `TLS certificate on ${at} does not name ${expectedName}`,
          description: `${mismatch.message}`,
          properties: { ...certProps, altnames: certificate.altnames, expected_name: expectedName },
        });
      }
    }
  }

  return {
    host, port, protocols: enabled, weak_protocols: weakProtocols, weak_ciphers: [...weakByCipher.keys()], certificate,
  };
}

function iso(d: Date | null): string | null {
  return d && !Number.isNaN(d.getTime()) ? d.toISOString() : null;
}
