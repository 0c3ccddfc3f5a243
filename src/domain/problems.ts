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
    // A union of object shapes reports the branch it tried deepest; its nested issues
    // name the real field.
    if (issue.issues && issue.issues.length > 0 && issue.type !== 'union') {
      problems.push(...issuesToProblems(issue.issues, prefix));
      continue;
    }
    problems.push({ path: formatPath([...prefix, ...keys]) || '(body)', message: humanMessage(issue) });
  }
  return problems;
}

function humanMessage(issue: AnyIssue): string {
  // valibot's default messages start with "Invalid type: Expected ..."; keep them, they
  // say what was expected and what was received.
  return issue.message;
}
