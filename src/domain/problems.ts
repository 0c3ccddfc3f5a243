// One problem per invalid input field, with a path like `steps[2].depends_on[0]`.
import type * as v from 'valibot';

export type Problem = { path: string; message: string };

export function formatPath(segments: readonly (string | number)[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else out += out === '' ? s : `.${s}`;
  }
  return out;
}

type AnyIssue = v.BaseIssue<unknown>;

export function issuesToProblems(issues: readonly AnyIssue[], prefix: (string | number)[] = []): Problem[] {
  const problems: Problem[] = [];
  for (const issue of issues) {
    const keys = (issue.path ?? []).map((item) => item.key as string | number);
    if (issue.issues && issue.issues.length > 0) {
      // A union none of whose options matched: when an option had the right type but failed
      // a check (a filter's expression that does not compile), that is the problem to name,
      // not the union's "must be one of these shapes". Its options' issues have paths
      // relative to the union's own.
      const checks = failedChecks(issue.issues, [...prefix, ...keys]);
      if (checks.length > 0) {
        problems.push(...checks);
        continue;
      }
    }
    problems.push({ path: formatPath([...prefix, ...keys]) || '(body)', message: humanMessage(issue) });
  }
  return problems;
}

/** The failed checks (not type mismatches) among a union's options' issues, however deeply nested. */
function failedChecks(issues: readonly AnyIssue[], prefix: (string | number)[]): Problem[] {
  const out: Problem[] = [];
  for (const i of issues) {
    const keys = (i.path ?? []).map((item) => item.key as string | number);
    if (i.kind === 'validation') out.push({ path: formatPath([...prefix, ...keys]) || '(body)', message: humanMessage(i) });
    else if (i.issues) out.push(...failedChecks(i.issues, [...prefix, ...keys]));
  }
  return out;
}

function humanMessage(issue: AnyIssue): string {
  // valibot's default messages start with "Invalid type: Expected ..."; keep them, they
  // say what was expected and what was received.
  return issue.message;
}
