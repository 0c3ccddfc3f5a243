// Leaked credentials (seed 002 `/credentials/ingest`, module `credentials`): each becomes a
// finding of type credential_leak of the tool `credentials`, on no asset. Its identity is the
// credential and where it leaked (the identifier and source are in its title, which the
// computed fingerprint hashes): the same leak reported again is the same finding.
import * as v from 'valibot';
import { FreeFormValue, freeFormProblem } from '../json.ts';
import { issuesToProblems, type Problem } from '../problems.ts';
import { NotFindingsInput, type FindingDraft, type ParsedFindings } from './model.ts';
import { Severity } from './report.ts';

/** The tool name credential findings carry. */
export const CREDENTIALS_TOOL = 'credentials';

export const Credential = v.objectWithRest({
  identifier: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(1024)),
  source: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  leaked_at: v.optional(v.nullable(v.pipe(
    v.string(),
    v.check((s) => !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 timestamp'),
    v.examples(['2026-01-29T10:00:00Z']),
  ))),
  severity: v.optional(v.nullable(Severity)),
  details: v.optional(v.nullable(FreeFormValue)),
}, FreeFormValue);

/**
 * The body, for the API contract: a credential of another shape is skipped and listed in the
 * answer, so any value is taken there (the described shape, or one that will be skipped).
 */
export const CredentialsBody = v.object({
  credentials: v.array(v.union([Credential, v.unknown()])),
});

const CredentialsHead = v.object({ credentials: v.array(v.unknown()) });

export function credentialFindings(body: unknown): ParsedFindings {
  const head = v.safeParse(CredentialsHead, body);
  if (!head.success) throw new NotFindingsInput('The body is not a list of credentials', issuesToProblems(head.issues));
  const findings: FindingDraft[] = [];
  const problems: Problem[] = [];
  let skipped = 0;
  head.output.credentials.forEach((raw, i) => {
    const c = v.safeParse(Credential, raw);
    if (!c.success) {
      problems.push(...issuesToProblems(c.issues, ['credentials', i]));
      skipped++;
      return;
    }
    const { identifier, source, leaked_at, severity, details, ...rest } = c.output;
    const properties: Record<string, unknown> = { ...rest, identifier, source };
    if (leaked_at) properties.leaked_at = new Date(Date.parse(leaked_at)).toISOString();
    if (details !== undefined && details !== null) properties.details = details;
    const tooBig = freeFormProblem(properties);
    if (tooBig) {
      problems.push({ path: `credentials[${i}]`, message: `(its details with its other fields) ${tooBig}` });
      skipped++;
      return;
    }
    findings.push({
      path: `credentials[${i}]`,
      asset: { kind: 'none' },
      type: 'credential_leak',
      tool: CREDENTIALS_TOOL,
      rule_id: source,
      title: `Leaked credential ${identifier} (${source})`.slice(0, 1000),
      description: null,
      severity: severity ?? 'high',
      location: {},
      vulnerability: null,
      references: [],
      properties,
      tool_fingerprint: null,
      line_hash: null,
    });
  });
  return { assets: [], findings, problems, skipped };
}
