import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import { oneShotRequest, type Reply } from '../support/http.js'
import { build, PASSWORD, selfSignedCertificate, tempDir } from './helper.js'

function httpsRequest (url: string, ca: Buffer, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<Reply> {
  return oneShotRequest(url, method, path, { ...options, ca, timeoutMs: 10_000 })
}

describe('tls', () => {
  it('serves HTTPS with the configured certificate', async (t) => {
    const { certFile, keyFile } = selfSignedCertificate(tempDir(t))
    const ca = readFileSync(certFile)
    const { url, createUser } = await build(t, { env: { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile } })
    assert.match(url, /^https:\/\//)

    const live = await httpsRequest(url, ca, 'GET', '/health/live')
    assert.equal(live.status, 200)
    assert.deepEqual(live.body, { status: 'ok' })

    await createUser('alice')
    const login = await httpsRequest(url, ca, 'POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })
    assert.equal(login.status, 200)
    assert.equal(typeof login.body.accessToken, 'string')
    const me = await httpsRequest(url, ca, 'GET', '/auth/me', { token: login.body.accessToken as string })
    assert.equal(me.status, 200)
    assert.equal(me.body.user.id, 'alice')

    // Served by that certificate and no other: a client trusting a different CA is refused.
    const other = readFileSync(selfSignedCertificate(tempDir(t)).certFile)
    await assert.rejects(httpsRequest(url, other, 'GET', '/health/live'), (err: NodeJS.ErrnoException) => {
      assert.match(String(err.code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/)
      return true
    })
  })

  it('does not answer plain HTTP on the TLS port', async (t) => {
    const { certFile, keyFile } = selfSignedCertificate(tempDir(t))
    const { url } = await build(t, { env: { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile } })
    const plain = url.replace(/^https:/, 'http:')
    const outcome = await new Promise<number | Error>((resolve) => {
      const req = http.get(new URL('/health/live', plain), { agent: false, timeout: 10_000 }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('timeout', () => req.destroy(new Error('timed out')))
      req.on('error', resolve)
    })
    assert.notEqual(outcome, 200)
  })
})
