// The security rule set the agent's eslint step runs (given with --config, so a scanned
// repository's own eslint.config.js, which is code, is never loaded). eslint-plugin-security's
// recommended rules plus the core rules that catch code built from strings; the rules that
// let input decide what runs are errors (high), the rest warnings (medium).
import security from 'eslint-plugin-security';
import * as stripTypes from './eslint-typescript.ts';

// Not core no-eval: detect-eval-with-expression reports the same calls when their argument is
// not a literal (the ones input can reach), and both would make two findings of one line.
const errors = {
  'no-implied-eval': 'error',
  'no-new-func': 'error',
  'no-script-url': 'error',
  'security/detect-eval-with-expression': 'error',
  'security/detect-child-process': 'error',
  'security/detect-non-literal-require': 'error',
  'security/detect-disable-mustache-escape': 'error',
  'security/detect-bidi-characters': 'error',
};

export default [
  {
    ignores: ['**/node_modules/**', '**/.git/**', '**/dist/**', '**/build/**', '**/coverage/**', '**/vendor/**', '**/*.min.js'],
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs', '**/*.jsx'],
    languageOptions: {
      ecmaVersion: 'latest',
      sourceType: 'module',
      parserOptions: { ecmaFeatures: { jsx: true } },
    },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
  },
  {
    files: ['**/*.ts', '**/*.mts', '**/*.cts'],
    languageOptions: { parser: stripTypes, sourceType: 'module' },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs', '**/*.jsx', '**/*.ts', '**/*.mts', '**/*.cts'],
    plugins: security.configs.recommended.plugins,
    linterOptions: { reportUnusedDisableDirectives: 'off' },
    rules: {
      ...security.configs.recommended.rules,
      // Flags every obj[variable]: thousands of findings in ordinary code, nearly all false.
      'security/detect-object-injection': 'off',
      ...errors,
    },
  },
];
