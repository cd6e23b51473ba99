import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', 'coverage/', 'test-artifacts/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', Buffer: 'readonly' }
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'error',
      eqeqeq: ['error', 'always']
    }
  },
  {
    // Type-aware rules: a promise nobody awaits or catches is an unhandled rejection waiting
    // to crash the process, and an async function handed to an API that ignores its promise
    // (an event listener, a timer) loses its errors the same way.
    files: ['**/*.ts', '**/*.mts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', {
        // node:test reports a failing test or suite itself; awaiting describe/test is optional.
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'suite', 'test', 'it'] }]
      }],
      '@typescript-eslint/no-misused-promises': 'error'
    }
  },
  {
    // The wire contract is shared by the server and the SDK, and will be packaged with the
    // SDK: it must not pull in server code or Node-only APIs (msgpackr runs in browsers too).
    files: ['src/protocol/**'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '^(?!@sinclair/typebox(/|$)|msgpackr$|\\./)', message: 'src/protocol/ imports only TypeBox, msgpackr and its own files (it ships with the SDK)' }]
      }]
    }
  },
  {
    // The SDK never imports the server: only its own files and the wire contract.
    files: ['src/client/**'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '^\\.\\./(?!protocol/)', message: 'the SDK imports only src/client/ and the wire contract (src/protocol/)' }]
      }]
    }
  },
  {
    files: ['scripts/**', 'test/**'],
    rules: { 'no-console': 'off' }
  },
  {
    // The web app: what no promise reports (e.g. a failed token refresh) goes to the devtools console.
    files: ['web/**'],
    rules: { 'no-console': ['error', { allow: ['warn'] }] }
  }
)
