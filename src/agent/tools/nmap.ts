// nmap (Debian package `nmap`): the open TCP ports and services of a host. A connect scan
// (-sT: no raw sockets, so the agent runs unprivileged) of the 100 most common ports unless
// the step names ports; -sV (service versions) when asked, since it takes seconds per port.
// One finding per open port: `info`, or `low` for services that should rarely face a network.
import * as v from 'valibot';
import { XMLParser } from 'fast-xml-parser';
import { isIP } from 'node:net';
import { fullReport, type ReportFinding } from '../report.ts';
import type { Target } from '../targets.ts';
import { detectSystemBinary, findExecutable } from './binaries.ts';
import { parseStepConfig, tail, ToolError, type ParseContext, type ToolAdapter, type ToolResult } from './tool.ts';

const PORT_LIST = /^\d{1,5}(?:-\d{1,5})?(?:,\d{1,5}(?:-\d{1,5})?)*$/;

const Options = v.strictObject({
  /** "22,80,443,8000-8100" or [22, 80, 443]. */
  ports: v.optional(v.union([
    v.pipe(v.string(), v.regex(PORT_LIST, 'must be like "22,80,8000-8100"'), v.check(portsInRange, 'ports must be 1-65535, ranges low-high')),
    v.pipe(v.array(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535))), v.minLength(1), v.maxLength(1000)),
  ], 'must be a port list like "22,80,8000-8100" or an array of port numbers')),
  /** The N most common ports (nmap's services table); default 100. */
  top_ports: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
  /** Probe open ports for service and version (-sV). */
  service_detection: v.optional(v.boolean()),
  version_intensity: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(9))),
  /** nmap's -T template, polite (2) to aggressive (4). */
  timing: v.optional(v.picklist([2, 3, 4], 'must be 2, 3 or 4')),
  max_retries: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(10))),
});
type Options = v.InferOutput<typeof Options>;

function portsInRange(list: string): boolean {
  return list.split(',').every((part) => {
    const [lo, hi = lo] = part.split('-').map(Number);
    return lo >= 1 && hi <= 65535 && lo <= hi;
  });
}

function options(stepConfig: unknown): Options {
  const o = parseStepConfig('nmap', Options, stepConfig);
  if (o.ports !== undefined && o.top_ports !== undefined) {
    throw new ToolError('invalid_config', 'nmap: step_config.ports and step_config.top_ports exclude each other');
  }
  if (o.version_intensity !== undefined && !o.service_detection) {
    throw new ToolError('invalid_config', 'nmap: step_config.version_intensity needs service_detection: true');
  }
  return o;
}

/** Services that should rarely face a network: cleartext logins, file shares, remote desktops, databases. */
const EXPOSED_RISK = new Set([
  'telnet', 'ftp', 'tftp', 'rlogin', 'rsh', 'rexec', 'login', 'shell', 'exec', 'netbios-ssn', 'microsoft-ds', 'ms-wbt-server',
  'vnc', 'x11', 'mysql', 'postgresql', 'ms-sql-s', 'oracle', 'mongodb', 'mongod', 'redis', 'memcached', 'elasticsearch',
  'docker', 'kubernetes', 'ldap', 'snmp', 'nfs', 'rpcbind', 'cassandra', 'couchdb', 'zookeeper',
]);
const TLS_SERVICES = new Set([
  'ssl', 'tls', 'https', 'https-alt', 'imaps', 'pop3s', 'smtps', 'submissions', 'ldaps', 'ldapssl', 'ftps', 'ftps-data',
  'nntps', 'ircs-u', 'telnets', 'xmpp-clients', 'sips',
]);

export function isTlsService(name: string | undefined, tunnel: string | undefined): boolean {
  if (tunnel === 'ssl') return true;
  if (!name) return false;
  return TLS_SERVICES.has(name) || name.startsWith('ssl/') || name.startsWith('https');
}

const xml = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseAttributeValue: false,
  parseTagValue: false,
  isArray: (name, _jpath, _leaf, isAttribute) => !isAttribute && ['host', 'port', 'address', 'hostname', 'cpe', 'extraports'].includes(name),
});

type NmapService = { name?: string; product?: string; version?: string; extrainfo?: string; tunnel?: string; method?: string; conf?: string; cpe?: string[] };
type NmapPort = { protocol: string; portid: string; state?: { state?: string }; service?: NmapService };
type NmapHost = { address?: { addr: string; addrtype: string }[]; ports?: { port?: NmapPort[] } };

export type OpenPort = { port: number; protocol: string; service: string | null; product: string | null; version: string | null; tunnel: string | null; tls: boolean };

export const nmap: ToolAdapter = {
  name: 'nmap',
  scans: 'host',
  detect: () => detectSystemBinary('nmap', 'nmap', ['--version'], /Nmap version (\S+)/, 'apt-get install -y nmap'),
  checkConfig: (stepConfig) => void options(stepConfig),

  command(stepConfig, target, workdir) {
    const o = options(stepConfig);
    const host = hostOf(target, 'nmap');
    const argv = [findExecutable('nmap') ?? 'nmap', '-sT', '-Pn', '-n', '--open'];
    if (isIP(host) === 6) argv.push('-6');
    if (o.ports !== undefined) argv.push('-p', Array.isArray(o.ports) ? o.ports.join(',') : o.ports);
    else argv.push('--top-ports', String(o.top_ports ?? 100));
    if (o.service_detection) {
      argv.push('-sV');
      if (o.version_intensity !== undefined) argv.push('--version-intensity', String(o.version_intensity));
    }
    if (o.timing !== undefined) argv.push(`-T${o.timing}`);
    if (o.max_retries !== undefined) argv.push('--max-retries', String(o.max_retries));
    argv.push('-oX', '-', '--', host);
    return [{ argv, cwd: workdir }];
  },

  parse(stdout, stderr, exitCode, ctx) {
    return parseNmap(stdout, stderr, exitCode, ctx);
  },
};

export function hostOf(target: Target, tool: string): string {
  if (target.kind !== 'host') throw new ToolError('target_unsupported', `${tool} scans hosts; a ${target.asset.type} asset has none`);
  return target.host;
}

export function parseNmap(stdout: string, stderr: string, exitCode: number, ctx: ParseContext): ToolResult {
  if (exitCode !== 0) throw new ToolError('tool_failed', `nmap exited with ${exitCode}: ${tail(stderr)}`, exitCode);
  let doc: { nmaprun?: { version?: string; host?: NmapHost[] } };
  try {
    doc = xml.parse(stdout) as typeof doc;
  } catch (err) {
    throw new ToolError('output_invalid', `nmap wrote no XML: ${(err as Error).message}`);
  }
  const run = doc.nmaprun;
  if (!run) throw new ToolError('output_invalid', `nmap wrote no <nmaprun>: ${tail(stderr) || tail(stdout, 300)}`);
  const hosts = run.host ?? [];
  if (hosts.length === 0) {
    // With -Pn a host is never "down": no host means nmap could not resolve or reach the name.
    throw new ToolError('target_unreachable', `nmap scanned no host: ${tail(stderr) || 'no host in the output'}`);
  }
  const scanned = ctx.target.kind === 'host' ? ctx.target.host : (hosts[0].address?.[0]?.addr ?? '');
  const open: OpenPort[] = [];
  for (const h of hosts) {
    for (const p of h.ports?.port ?? []) {
      if (p.state?.state !== 'open') continue;
      const s = p.service ?? {};
      open.push({
        port: Number(p.portid), protocol: p.protocol, service: s.name ?? null, product: s.product ?? null,
        version: s.version ?? null, tunnel: s.tunnel ?? null, tls: isTlsService(s.name, s.tunnel),
      });
    }
  }
  open.sort((a, b) => a.port - b.port);
  const findings = open.map((p) => portFinding(scanned, p, hosts));
  return {
    format: 'report',
    document: fullReport({ name: 'nmap', version: run.version }, ctx.now, findings),
    output: {
      host: scanned,
      open_ports: open.map((p) => p.port),
      tls_ports: open.filter((p) => p.tls).map((p) => p.port),
      services: open.map(({ port, protocol, service, product, version, tunnel }) => ({ port, protocol, service, product, version, tunnel })),
    },
  };
}

function portFinding(host: string, p: OpenPort, hosts: NmapHost[]): ReportFinding {
  const service = p.service && p.service !== 'unknown' ? p.service : null;
  const product = [p.product, p.version].filter(Boolean).join(' ');
  const label = [service, product ? `(${product})` : null].filter(Boolean).join(' ');
  const risky = service !== null && EXPOSED_RISK.has(service);
  const raw = hosts.flatMap((h) => h.ports?.port ?? []).find((x) => Number(x.portid) === p.port && x.protocol === p.protocol);
  const cpe = raw?.service?.cpe ?? [];
  return {
    type: 'misconfiguration',
    title: `Open port ${p.port}/${p.protocol}${label ? `: ${label}` : ''}`,
    severity: risky ? 'low' : 'info',
    rule_id: risky ? 'exposed-service' : 'open-port',
    description:
      `${host} accepts connections on ${p.port}/${p.protocol}` +
      (service ? `; the service looks like ${service}${product ? ` (${product})` : ''}` : '') +
      (p.tls ? ', over TLS' : '') +
      (risky ? `. ${service} is rarely meant to be reachable from a network: check it is firewalled or needed.` : '.'),
    location: { host, port: p.port },
    // The port is the finding: a new service version on it is the same finding, updated.
    fingerprint: `nmap:${host}:${p.port}/${p.protocol}`,
    properties: {
      protocol: p.protocol, service: p.service, product: p.product, version: p.version,
      extrainfo: raw?.service?.extrainfo ?? null, tunnel: p.tunnel, tls: p.tls, cpe,
      detection: raw?.service?.method ?? null,
    },
  };
}
