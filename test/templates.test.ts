// System templates (seed 001 "System Templates") through the real app: the seed's five
// templates and the reference agent's Local Security Scan,
// each a valid pipeline document; copying one into a tenant with `use`; naming, errors and
// tenant isolation; and a run of the copied Full Security Scan on a web application.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createTenant, getRun, startRun, stepsByKey, type Tenant } from './support/fixtures.ts';
import { SYSTEM_TEMPLATES } from '../src/domain/templates.ts';
import { validatePipeline } from '../src/domain/pipeline.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// Seed 001 "System Templates": name → [step key, tool] in the seed's order.
const SEED: Record<string, [string, string][]> = {
  'Full Security Scan': [['sast', 'semgrep'], ['sca', 'trivy'], ['secrets', 'gitleaks'], ['iac', 'checkov'], ['dast', 'nuclei']],
  'Container Security': [['container_scan', 'trivy'], ['sbom_generation', 'syft'], ['vulnerability_check', 'grype']],
  'API Security': [['api_discovery', 'swagger'], ['api_scan', 'nuclei'], ['fuzzing', 'ffuf']],
  'Infrastructure Scan': [['port_scan', 'nmap'], ['vuln_scan', 'nuclei'], ['ssl_check', 'testssl']],
  'Continuous Monitoring': [['quick_sast', 'semgrep'], ['sca_critical', 'trivy']],
  // Not in the seed: the tools of the reference agent (src/agent/).
  'Local Security Scan': [['secrets', 'secretlint'], ['sast', 'eslint'], ['sca', 'npm-audit'], ['infra', 'nmap'], ['tls', 'sslscan']],
};
const SLUGS = ['full-security-scan', 'container-security', 'api-security', 'infrastructure-scan', 'continuous-monitoring', 'local-security-scan'];

let h: Harness;
let a: Tenant;
let b: Tenant;
let fullId: string;

before(async () => {
  h = await startHarness();
  a = await createTenant(h);
  b = await createTenant(h);
});
after(() => h.close());

const list = (t: Tenant) => h.request('GET', '/api/v1/pipeline-templates', { token: t.token });
const use = (t: Tenant, ref: string, body?: unknown) =>
  h.request('POST', `/api/v1/pipeline-templates/${ref}/use`, { token: t.token, body });

describe('system templates (domain)', () => {
  it('every template validates as a pipeline document, with its seed name and steps', () => {
    assert.deepEqual(SYSTEM_TEMPLATES.map((t) => t.document.name), Object.keys(SEED));
    for (const t of SYSTEM_TEMPLATES) {
      const checked = validatePipeline(t.document);
      assert.ok(checked.ok, `${t.slug}: ${JSON.stringify(!checked.ok && checked.problems)}`);
      assert.deepEqual(checked.value.steps.map((s) => [s.step_key, s.tool]), SEED[t.document.name]);
      for (const s of checked.value.steps) {
        assert.ok(s.capabilities.length > 0, `${t.slug}.${s.step_key} has no capabilities`);
        assert.ok(Object.keys(s.config).length > 0, `${t.slug}.${s.step_key} has no config`);
      }
    }
  });

  it('ids are fixed distinct UUIDs and slugs are the documented ones', () => {
    assert.deepEqual(SYSTEM_TEMPLATES.map((t) => t.slug), SLUGS);
    assert.equal(new Set(SYSTEM_TEMPLATES.map((t) => t.id)).size, SLUGS.length);
    for (const t of SYSTEM_TEMPLATES) assert.match(t.id, UUID_RE);
  });
});

describe('GET /api/v1/pipeline-templates', () => {
  it('lists the six templates, the same for every tenant', async () => {
    const res = await list(a);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.next_cursor, null);
    assert.deepEqual(res.body.items.map((i: any) => i.name), Object.keys(SEED));
    assert.deepEqual(res.body.items.map((i: any) => i.slug), SLUGS);
    for (const item of res.body.items) {
      assert.equal(item.is_template, true);
      assert.match(item.id, UUID_RE);
      assert.equal(typeof item.description, 'string');
      assert.ok(Array.isArray(item.triggers) && item.triggers.length > 0);
      assert.equal(typeof item.settings.max_parallel_steps, 'number');
      assert.deepEqual(item.steps.map((s: any) => [s.step_key, s.tool]), SEED[item.name]);
      for (const s of item.steps) {
        assert.equal(s.id, s.step_key);
        assert.match(s.timeout, /^\d+[mh]$/);
        assert.equal(typeof s.timeout_seconds, 'number');
      }
    }
    const again = await list(b);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, res.body);
  });

  it('Full Security Scan: the static steps run in parallel, conditional dast after all of them', async () => {
    const full = (await list(a)).body.items.find((i: any) => i.slug === 'full-security-scan');
    const steps = Object.fromEntries(full.steps.map((s: any) => [s.step_key, s]));
    for (const k of ['sast', 'sca', 'secrets', 'iac']) assert.deepEqual(steps[k].depends_on, [], k);
    assert.deepEqual([...steps.dast.depends_on].sort(), ['iac', 'sast', 'sca', 'secrets']);
    assert.deepEqual(steps.dast.condition, { type: 'expression', value: "asset.type == 'web_application' && asset.has_url" });
    assert.equal(steps.sast.timeout, '30m');
    assert.equal(steps.sast.timeout_seconds, 1800);
    assert.ok(full.settings.max_parallel_steps >= 4, 'the four static steps fit in one wave');
  });

  it('Local Security Scan: repository steps on repositories, nmap on hosts, sslscan only after nmap found a TLS port', async () => {
    const local = (await list(a)).body.items.find((i: any) => i.slug === 'local-security-scan');
    const steps = Object.fromEntries(local.steps.map((s: any) => [s.step_key, s]));
    for (const k of ['secrets', 'sast', 'sca']) assert.deepEqual(steps[k].condition, { type: 'asset_type', value: 'repository' }, k);
    assert.deepEqual(steps.infra.condition.value, ['server', 'ip_address', 'domain', 'web_application', 'api']);
    assert.deepEqual(steps.tls.depends_on, ['infra']);
    assert.equal(steps.tls.condition.type, 'expression');
    assert.match(steps.tls.condition.value, /steps\.infra\.output\.tls_ports/);
    assert.deepEqual(steps.tls.config, { ports_from: 'infra' });
  });

  it('GET one by id (any case) and by slug; unknown → 404', async () => {
    const items = (await list(a)).body.items;
    for (const item of items) {
      for (const ref of [item.id, item.id.toUpperCase(), item.slug]) {
        const res = await h.request('GET', `/api/v1/pipeline-templates/${ref}`, { token: a.token });
        assert.equal(res.status, 200, `${ref}: ${JSON.stringify(res.body)}`);
        assert.deepEqual(res.body, item);
      }
    }
    for (const ref of ['00000000-0000-4000-8000-000000000000', 'no-such-template']) {
      const res = await h.request('GET', `/api/v1/pipeline-templates/${ref}`, { token: a.token });
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'not_found');
    }
  });

  it('needs a tenant credential: none → 401, the admin token → 403', async () => {
    const full = SYSTEM_TEMPLATES[0];
    for (const [method, path] of [
      ['GET', '/api/v1/pipeline-templates'],
      ['GET', `/api/v1/pipeline-templates/${full.id}`],
      ['POST', `/api/v1/pipeline-templates/${full.id}/use`],
    ]) {
      const none = await h.request(method, path);
      assert.equal(none.status, 401, `${method} ${path}: ${JSON.stringify(none.body)}`);
      const admin = await h.request(method, path, { token: ADMIN_TOKEN });
      assert.equal(admin.status, 403, `${method} ${path}: ${JSON.stringify(admin.body)}`);
    }
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_templates`);
    assert.equal(rows[0].n, 0, 'no request without a tenant credential created a pipeline');
  });
});

describe('POST /api/v1/pipeline-templates/{id}/use', () => {
  it('copies the template into the tenant as a pipeline at version 1, as POST /pipelines answers', async () => {
    const template = (await h.request('GET', '/api/v1/pipeline-templates/full-security-scan', { token: a.token })).body;
    const res = await use(a, template.id);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const p = res.body;
    fullId = p.id;
    assert.match(p.id, UUID_RE);
    assert.notEqual(p.id, template.id);
    assert.equal(p.tenant_id, a.id);
    assert.equal(p.name, 'Full Security Scan');
    assert.equal(p.description, template.description);
    assert.equal(p.version, 1);
    assert.equal(p.current_version, 1);
    assert.equal(p.is_active, true);
    assert.deepEqual(p.steps, template.steps);
    assert.deepEqual(p.settings, template.settings);
    assert.deepEqual(p.triggers, template.triggers);
    assert.deepEqual(p.tags, template.tags);
    // The same pipeline the tenant's own API shows, and the same shape POST /pipelines gives.
    const got = await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: a.token });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, p);
    const direct = await h.request('POST', '/api/v1/pipelines', {
      token: a.token, body: { ...SYSTEM_TEMPLATES[0].document, name: 'Direct copy' },
    });
    assert.equal(direct.status, 201, JSON.stringify(direct.body));
    assert.deepEqual(Object.keys(direct.body).sort(), Object.keys(p).sort());
    assert.deepEqual(direct.body.steps, p.steps);
  });

  it('a second use of the same template is named "(copy)", then "(copy 2)"; by slug works too', async () => {
    const second = await use(a, 'full-security-scan');
    assert.equal(second.status, 201, JSON.stringify(second.body));
    assert.equal(second.body.name, 'Full Security Scan (copy)');
    assert.equal(second.body.version, 1);
    const third = await use(a, SYSTEM_TEMPLATES[0].id.toUpperCase(), {});
    assert.equal(third.status, 201, JSON.stringify(third.body));
    assert.equal(third.body.name, 'Full Security Scan (copy 2)');
    assert.equal(new Set([fullId, second.body.id, third.body.id]).size, 3);
  });

  it('an explicit name is used; a taken explicit name is 409 name_taken and creates nothing', async () => {
    const named = await use(a, 'container-security', { name: '  Images nightly  ' });
    assert.equal(named.status, 201, JSON.stringify(named.body));
    assert.equal(named.body.name, 'Images nightly');
    assert.deepEqual(named.body.steps.map((s: any) => s.step_key), ['container_scan', 'sbom_generation', 'vulnerability_check']);

    const before = (await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_templates WHERE tenant_id = $1`, [a.id])).rows[0].n;
    for (const name of ['Images nightly', 'IMAGES NIGHTLY', 'Full Security Scan']) {
      const taken = await use(a, 'api-security', { name });
      assert.equal(taken.status, 409, `${name}: ${JSON.stringify(taken.body)}`);
      assert.equal(taken.body.error.code, 'name_taken');
    }
    const afterCount = (await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_templates WHERE tenant_id = $1`, [a.id])).rows[0].n;
    assert.equal(afterCount, before);
  });

  it('every template can be used and gives a pipeline with its steps', async () => {
    const items = (await list(a)).body.items;
    for (const item of items.slice(1)) {
      const res = await use(a, item.slug, { name: `From ${item.slug}` });
      assert.equal(res.status, 201, `${item.slug}: ${JSON.stringify(res.body)}`);
      assert.deepEqual(res.body.steps, item.steps);
      assert.equal(res.body.version, 1);
    }
  });

  it('a bad body is a 400 naming the field; an unknown template is a 404', async () => {
    const cases: [unknown, string][] = [
      [[], '(body)'],
      ['"Full"', '(body)'],
      [{ name: 5 }, 'name'],
      [{ name: '' }, 'name'],
      [{ name: '   ' }, 'name'],
      [{ name: null }, 'name'],
      [{ name: 'x'.repeat(256) }, 'name'],
    ];
    for (const [body, path] of cases) {
      const res = typeof body === 'string'
        ? await h.request('POST', '/api/v1/pipeline-templates/full-security-scan/use', { token: a.token, raw: body })
        : await use(a, 'full-security-scan', body);
      assert.equal(res.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'invalid_request');
      assert.ok(res.body.error.details.some((d: any) => d.path === path), `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    }
    const malformed = await h.request('POST', '/api/v1/pipeline-templates/full-security-scan/use', { token: a.token, raw: '{"name":' });
    assert.equal(malformed.status, 400);
    for (const ref of ['00000000-0000-4000-8000-000000000000', 'nope']) {
      const res = await use(a, ref, { name: 'Whatever' });
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'not_found');
    }
  });

  it('tenants are isolated: B gets its own copy under the plain name, and cannot see A\'s', async () => {
    const res = await use(b, 'full-security-scan');
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.name, 'Full Security Scan', "A's copies do not take B's names");
    assert.equal(res.body.tenant_id, b.id);
    assert.notEqual(res.body.id, fullId);
    const aFromB = await h.request('GET', `/api/v1/pipelines/${fullId}`, { token: b.token });
    assert.equal(aFromB.status, 404);
    const bList = await h.request('GET', '/api/v1/pipelines', { token: b.token });
    assert.equal(bList.status, 200);
    assert.deepEqual(bList.body.items.map((p: any) => p.id), [res.body.id]);
    const aList = await h.request('GET', '/api/v1/pipelines?limit=200', { token: a.token });
    assert.ok(!aList.body.items.some((p: any) => p.id === res.body.id));
  });
});

describe('a copied Full Security Scan runs', () => {
  it('on a web application with a URL: sast, sca, secrets and iac together, then dast; the run completes', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, {
      tools: ['semgrep', 'trivy', 'gitleaks', 'checkov', 'nuclei'],
      capabilities: ['sast', 'sca', 'secrets', 'iac', 'dast'],
      max_concurrent_jobs: 10,
    });
    const pipeline = (await use(t, 'full-security-scan')).body;
    const asset = await createAsset(h, t, { type: 'web_application', name: 'shop', value: 'https://shop.example.com' });
    const run = await startRun(h, t, pipeline.id, { asset_id: asset.id });
    assert.equal(run.pipeline_version, 1);

    const waves: string[][] = [];
    for (let i = 0; i < 10; i++) {
      await h.settle();
      const commands = await agent.poll({ limit: 10 });
      if (commands.length === 0) break;
      waves.push(commands.map((c) => c.payload.step_key).sort());
      for (const c of commands) {
        assert.equal(c.payload.pipeline_run_id, run.id);
        // The template's tool config reaches the agent.
        const stepDef = pipeline.steps.find((s: any) => s.step_key === c.payload.step_key);
        assert.equal(c.payload.tool, stepDef.tool);
        for (const [k, val] of Object.entries(stepDef.config)) assert.deepEqual(c.payload.step_config[k], val, `${c.payload.step_key}.${k}`);
        await agent.finish(c.id, { findings_count: 1 });
      }
    }
    await h.settle();
    assert.deepEqual(waves, [['iac', 'sast', 'sca', 'secrets'], ['dast']]);

    const done = await getRun(h, t, run.id);
    assert.equal(done.status, 'completed', JSON.stringify(done));
    const steps = stepsByKey(done);
    assert.equal(steps.dast.status, 'completed');
    assert.equal(steps.dast.condition_result, true);
    // That dast waited for the other four is shown by the waves above: it was handed out only
    // after all four had been finished. Their timestamps cannot show it: each is now() of the
    // transaction that wrote it, and a transaction that began earlier may commit later.
    for (const k of ['sast', 'sca', 'secrets', 'iac']) assert.equal(steps[k].status, 'completed', k);
    assert.deepEqual([done.completed_steps, done.skipped_steps, done.failed_steps, done.total_findings], [5, 0, 0, 5]);
  });
});
