// The system templates of seed 001 "System Templates": five pipeline documents every tenant
// can list and copy (POST /api/v1/pipeline-templates/{id}/use), and a sixth, "Local Security
// Scan", made of the tools the reference agent (src/agent/) runs. They live in code, not in
// the database: they are the same for every tenant and change only with a release. Each is
// a document validatePipeline accepts; the ids are fixed so clients can keep them.
import type { Condition } from './conditions.ts';
import { validatePipeline, type PipelineDoc, type Settings, type Trigger } from './pipeline.ts';

export type TemplateStep = {
  id: string;
  name: string;
  order: number;
  tool: string;
  capabilities: string[];
  config: Record<string, unknown>;
  timeout: string;
  depends_on: string[];
  condition?: Condition;
};

export type TemplateDocument = {
  name: string;
  description: string;
  tags: string[];
  triggers: Trigger[];
  steps: TemplateStep[];
  settings: Settings;
};

export type SystemTemplate = { id: string; slug: string; document: TemplateDocument };

// Schedules belong to scans (API.md "Scans and schedules"), so no template carries a
// schedule trigger: copying a template never starts runs on its own.
const MANUAL: Trigger = { type: 'manual' };
const ON_PUSH: Trigger = { type: 'webhook', event: 'push' };

const SEVERITY_MEDIUM_UP = ['CRITICAL', 'HIGH', 'MEDIUM'];

export const SYSTEM_TEMPLATES: readonly SystemTemplate[] = [
  {
    id: '927678b5-815d-42ec-a764-7803641582af',
    slug: 'full-security-scan',
    document: {
      name: 'Full Security Scan',
      description: 'Complete security assessment for repositories',
      tags: ['repository', 'sast', 'sca', 'secrets', 'iac', 'dast'],
      triggers: [MANUAL, ON_PUSH],
      // The four static steps run together; dast waits for all of them (seed 001 "Entity Model").
      steps: [
        {
          id: 'sast', name: 'Static Analysis', order: 1, tool: 'semgrep', capabilities: ['sast'],
          config: {
            rules: ['p/security-audit', 'p/owasp-top-ten'],
            severity_threshold: 'medium',
            exclude: ['node_modules/', 'vendor/', 'dist/', '**/*.min.js'],
            max_target_bytes: 1_000_000,
          },
          timeout: '30m', depends_on: [],
        },
        {
          id: 'sca', name: 'Dependency Scan', order: 2, tool: 'trivy', capabilities: ['sca'],
          config: { scan_type: 'fs', scanners: ['vuln', 'license'], severity: SEVERITY_MEDIUM_UP, ignore_unfixed: false },
          timeout: '15m', depends_on: [],
        },
        {
          id: 'secrets', name: 'Secret Detection', order: 3, tool: 'gitleaks', capabilities: ['secrets'],
          config: { mode: 'git', scan_history: true, redact: true },
          timeout: '10m', depends_on: [],
        },
        {
          id: 'iac', name: 'Infrastructure as Code Scan', order: 4, tool: 'checkov', capabilities: ['iac'],
          config: {
            frameworks: ['terraform', 'cloudformation', 'kubernetes', 'helm', 'dockerfile'],
            severity_threshold: 'medium',
            compact: true,
            download_external_modules: false,
          },
          timeout: '20m', depends_on: [],
        },
        {
          id: 'dast', name: 'Dynamic Scan', order: 5, tool: 'nuclei', capabilities: ['dast'],
          config: {
            templates: ['cves', 'vulnerabilities', 'exposures', 'misconfiguration'],
            severity: ['critical', 'high', 'medium'],
            rate_limit: 100,
            concurrency: 25,
          },
          timeout: '60m', depends_on: ['sast', 'sca', 'secrets', 'iac'],
          condition: { type: 'expression', value: "asset.type == 'web_application' && asset.has_url" },
        },
      ],
      settings: {
        max_parallel_steps: 4,
        fail_fast: false,
        retry_failed_steps: 1,
        notification: { on_completion: true, on_failure: true },
      },
    },
  },
  {
    id: 'b325a00b-1c49-4b50-8fee-2475cf83420a',
    slug: 'container-security',
    document: {
      name: 'Container Security',
      description: 'Security scan for container images',
      tags: ['container_image', 'container', 'sbom'],
      triggers: [MANUAL],
      // The image scan and the SBOM run together; grype checks the SBOM syft produced.
      steps: [
        {
          id: 'container_scan', name: 'Image Vulnerability Scan', order: 1, tool: 'trivy', capabilities: ['container'],
          config: {
            scan_type: 'image',
            scanners: ['vuln', 'secret', 'misconfig'],
            vuln_type: ['os', 'library'],
            severity: SEVERITY_MEDIUM_UP,
            ignore_unfixed: true,
          },
          timeout: '20m', depends_on: [],
        },
        {
          id: 'sbom_generation', name: 'SBOM Generation', order: 2, tool: 'syft', capabilities: ['sbom'],
          config: { output_format: 'cyclonedx-json', scope: 'all-layers' },
          timeout: '10m', depends_on: [],
        },
        {
          id: 'vulnerability_check', name: 'SBOM Vulnerability Check', order: 3, tool: 'grype', capabilities: ['sca'],
          config: { input: 'sbom', sbom_step: 'sbom_generation', fail_on_severity: 'high', only_fixed: false },
          timeout: '15m', depends_on: ['sbom_generation'],
        },
      ],
      settings: { max_parallel_steps: 2, fail_fast: false, retry_failed_steps: 1 },
    },
  },
  {
    id: 'edc1e147-aef1-4f06-91a1-5339641aec63',
    slug: 'api-security',
    document: {
      name: 'API Security',
      description: 'Security testing for APIs',
      tags: ['api', 'dast', 'fuzzing'],
      triggers: [MANUAL],
      // Discovery finds the API description first; the scan and the fuzzer then run side by side.
      steps: [
        {
          id: 'api_discovery', name: 'API Discovery', order: 1, tool: 'swagger', capabilities: ['api'],
          config: {
            spec_paths: ['/openapi.json', '/swagger.json', '/v3/api-docs', '/swagger/v1/swagger.json', '/api-docs'],
            follow_redirects: true,
            output_format: 'openapi-3',
          },
          timeout: '10m', depends_on: [],
        },
        {
          id: 'api_scan', name: 'API Vulnerability Scan', order: 2, tool: 'nuclei', capabilities: ['api', 'dast'],
          config: {
            templates: ['http/exposures/apis', 'http/vulnerabilities', 'http/misconfiguration'],
            severity: ['critical', 'high', 'medium'],
            rate_limit: 50,
          },
          timeout: '45m', depends_on: ['api_discovery'],
        },
        {
          id: 'fuzzing', name: 'API Fuzzing', order: 3, tool: 'ffuf', capabilities: ['fuzzing'],
          config: {
            wordlist: 'SecLists/Discovery/Web-Content/api/api-endpoints.txt',
            methods: ['GET', 'POST', 'PUT', 'DELETE'],
            match_codes: [200, 201, 204, 301, 302, 401, 403, 405, 500],
            threads: 20,
            rate: 50,
            recursion: false,
          },
          timeout: '60m', depends_on: ['api_discovery'],
        },
      ],
      settings: { max_parallel_steps: 2, fail_fast: false, retry_failed_steps: 1 },
    },
  },
  {
    id: 'b0f42ca2-7123-4efc-9b07-f2dfa13ee199',
    slug: 'infrastructure-scan',
    document: {
      name: 'Infrastructure Scan',
      description: 'Network and infrastructure security',
      tags: ['server', 'network', 'infra', 'tls'],
      triggers: [MANUAL],
      // The port scan finds the services; the vulnerability and TLS checks then run side by side.
      steps: [
        {
          id: 'port_scan', name: 'Port Scan', order: 1, tool: 'nmap', capabilities: ['infra'],
          config: { top_ports: 1000, scan_type: 'syn', service_detection: true, timing: 'T4', scripts: ['vulners'] },
          timeout: '30m', depends_on: [],
        },
        {
          id: 'vuln_scan', name: 'Network Vulnerability Scan', order: 2, tool: 'nuclei', capabilities: ['infra'],
          config: {
            templates: ['network', 'cves', 'default-logins', 'misconfiguration'],
            severity: ['critical', 'high', 'medium'],
            rate_limit: 100,
          },
          timeout: '60m', depends_on: ['port_scan'],
        },
        {
          id: 'ssl_check', name: 'TLS Configuration Check', order: 3, tool: 'testssl', capabilities: ['tls'],
          config: {
            checks: ['protocols', 'ciphers', 'vulnerabilities', 'certificate', 'headers'],
            severity: 'MEDIUM',
            sneaky: false,
          },
          timeout: '15m', depends_on: ['port_scan'],
        },
      ],
      settings: { max_parallel_steps: 2, fail_fast: false, retry_failed_steps: 1 },
    },
  },
  {
    id: 'fac59e29-9c51-4385-80b4-93955a6fd300',
    slug: 'continuous-monitoring',
    document: {
      name: 'Continuous Monitoring',
      description: 'Lightweight continuous security check',
      tags: ['repository', 'monitoring'],
      triggers: [MANUAL, ON_PUSH],
      // Limited rules and critical-only findings keep it cheap enough to run on every push;
      // low priority lets full scans go first.
      steps: [
        {
          id: 'quick_sast', name: 'Quick Static Analysis', order: 1, tool: 'semgrep', capabilities: ['sast'],
          config: { rules: ['p/ci'], severity_threshold: 'high', exclude: ['node_modules/', 'vendor/', 'test/', 'tests/'] },
          timeout: '10m', depends_on: [],
        },
        {
          id: 'sca_critical', name: 'Critical Dependency Check', order: 2, tool: 'trivy', capabilities: ['sca'],
          config: { scan_type: 'fs', scanners: ['vuln'], severity: ['CRITICAL'], ignore_unfixed: true },
          timeout: '10m', depends_on: [],
        },
      ],
      settings: { max_parallel_steps: 2, fail_fast: false, retry_failed_steps: 0, timeout: '30m', priority: 'low' },
    },
  },
  {
    id: '631ea7cf-20bf-4346-8c1d-f0dedc71cd41',
    slug: 'local-security-scan',
    document: {
      name: 'Local Security Scan',
      description: 'What the reference agent (npm run agent) runs with the tools of one host: secrets, JavaScript/TypeScript SAST '
        + 'and npm dependency advisories of a repository; the open ports of a host, then its TLS configuration when a TLS port is open',
      tags: ['repository', 'server', 'secrets', 'sast', 'sca', 'infra', 'tls', 'scanflow-agent'],
      triggers: [MANUAL, ON_PUSH],
      // A repository gets the three static steps together; a host gets the port scan, then
      // sslscan on the TLS ports nmap found (its output.tls_ports), and only when it found one.
      steps: [
        {
          id: 'secrets', name: 'Secret Detection', order: 1, tool: 'secretlint', capabilities: ['secrets'],
          config: { include: ['**/*'] },
          timeout: '10m', depends_on: [],
          condition: { type: 'asset_type', value: 'repository' },
        },
        {
          id: 'sast', name: 'JavaScript/TypeScript Static Analysis', order: 2, tool: 'eslint', capabilities: ['sast'],
          config: { include: ['.'] },
          timeout: '15m', depends_on: [],
          condition: { type: 'asset_type', value: 'repository' },
        },
        {
          id: 'sca', name: 'npm Dependency Audit', order: 3, tool: 'npm-audit', capabilities: ['sca'],
          config: { path: '.' },
          timeout: '10m', depends_on: [],
          condition: { type: 'asset_type', value: 'repository' },
        },
        {
          id: 'infra', name: 'Port Scan', order: 4, tool: 'nmap', capabilities: ['infra'],
          config: { top_ports: 1000, service_detection: true },
          timeout: '30m', depends_on: [],
          condition: { type: 'asset_type', value: ['server', 'ip_address', 'domain', 'web_application', 'api'] },
        },
        {
          id: 'tls', name: 'TLS Configuration Check', order: 5, tool: 'sslscan', capabilities: ['tls'],
          config: { ports_from: 'infra' },
          timeout: '15m', depends_on: ['infra'],
          condition: { type: 'expression', value: "steps.infra.status == 'completed' && size(steps.infra.output.tls_ports) > 0" },
        },
      ],
      settings: { max_parallel_steps: 3, fail_fast: false, retry_failed_steps: 1 },
    },
  },
];

/** A system template by its id (any case) or slug, or null. */
export function findSystemTemplate(ref: string): SystemTemplate | null {
  const key = ref.toLowerCase();
  return SYSTEM_TEMPLATES.find((t) => t.id === key || t.slug === key) ?? null;
}

/** The normalized document of a template; a template that does not validate is a bug. */
export function templatePipeline(t: SystemTemplate): PipelineDoc {
  const checked = validatePipeline(t.document);
  if (!checked.ok) {
    throw new Error(`system template '${t.slug}' is invalid: ${checked.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`);
  }
  return checked.value;
}
