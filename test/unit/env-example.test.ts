import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { EnvSchema, loadConfig } from '../../src/config.js'

describe('.env.example', () => {
  const text = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')
  const lines = text.split('\n')
  const documented = lines.filter(l => /^[A-Z_]+=/.test(l)).map(l => l.split('=')[0]!)

  it('documents every variable of the env schema, each under a comment, and nothing else', () => {
    assert.deepEqual([...documented].sort(), Object.keys(EnvSchema.properties).sort())
    for (const name of documented) {
      const index = lines.findIndex(l => l.startsWith(`${name}=`))
      assert.match(lines[index - 1] ?? '', /^# /, `${name} has a comment line above it`)
    }
  })

  it('is itself a valid configuration', () => {
    const env: Record<string, string> = {}
    for (const line of lines) {
      const match = /^([A-Z_]+)=(.*)$/.exec(line)
      if (match !== null) env[match[1]!] = match[2]!
    }
    const config = loadConfig({ ...env, DATA_DIR: '/tmp/switchboard-env-example', JWT_SECRET: 'x'.repeat(32) })
    assert.equal(config.port, 3000)
  })
})
