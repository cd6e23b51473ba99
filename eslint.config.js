import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', '**/dist/', 'node_modules/', 'data/', 'coverage/', 'test-artifacts/'] },
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
    // The wire contract (the @switchboard/protocol workspace package) is shared by the server and
    // the SDK and ships to browsers: no server code, no Node-only APIs (msgpackr runs in browsers too).
    files: ['packages/protocol/**'],
    ignores: ['packages/*/*.mjs'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '^(?!@sinclair/typebox(/|$)|msgpackr$|\\./)', message: '@switchboard/protocol imports only TypeBox, msgpackr and its own files (it ships with the SDK)' }]
      }]
    }
  },
  {
    // The SDK (@switchboard/client) never imports the server: only its own files, the wire
    // contract and TypeBox's types.
    files: ['packages/client/**'],
    ignores: ['packages/*/*.mjs'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '^(?!\\./|@switchboard/protocol/|@sinclair/typebox$)', message: 'the SDK imports only its own files, the wire contract (@switchboard/protocol) and TypeBox types' }]
      }]
    }
  },
  {
    // The server, its plugins and routes reach the SDK and the wire contract through their
    // package names, never through a path into packages/ (which would skip the exports map).
    files: ['src/**', 'plugins/**', 'routes/**', 'web/**', 'bench/**'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '(^|/)packages/', message: 'import @switchboard/client or @switchboard/protocol/<module> by name' }]
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
