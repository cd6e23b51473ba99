import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { build, PASSWORD } from './helper.js'

describe('logs', () => {
  it('never contain passwords, tokens, API keys or secret query parameters', async (t) => {
    const { request, createUser, logText, logs } = await build(t, { env: { LOG_LEVEL: 'trace' } })
    await createUser('root', 'admin')

    const wrongPassword = `wrong-${randomBytes(8).toString('hex')}`
    assert.equal((await request('POST', '/auth/login', { body: { username: 'root', password: wrongPassword } })).status, 401)

    const login = await request('POST', '/auth/login', { body: { username: 'root', password: PASSWORD } })
    assert.equal(login.status, 200)
    const accessToken = login.body.accessToken as string
    const refreshToken = login.body.refreshToken as string

    assert.equal((await request('GET', '/auth/me', { token: accessToken })).status, 200)

    const created = await request('POST', '/api-keys', { token: accessToken, body: { name: 'k', scopes: ['subscribe:*'] } })
    assert.equal(created.status, 201)
    const apiKey = created.body.key as string
    assert.equal((await request('GET', '/auth/me', { apiKey })).status, 200)

    const badKey = `sbk_${randomBytes(16).toString('hex')}`
    assert.equal((await request('GET', '/auth/me', { apiKey: badKey })).status, 401)

    const querySecret = `qs1-${randomBytes(8).toString('hex')}`
    const querySecret2 = `qs2-${randomBytes(8).toString('hex')}`
    const withQuery = await request('GET', `/auth/me?token=${querySecret}&api_key=${querySecret2}`, { token: accessToken })
    // Whether the route accepts the parameters is not the point; the URL is logged either way.
    assert.ok(withQuery.status < 500, withQuery.text)
    const unknownRoute = await request('GET', `/nowhere?refresh_token=${querySecret}&x=1`)
    assert.equal(unknownRoute.status, 404)

    const refreshed = await request('POST', '/auth/refresh', { body: { refreshToken } })
    assert.equal(refreshed.status, 200)
    // Reusing a refresh token is logged as a rejection; the token must still not be.
    assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken } })).status, 401)
    await request('POST', '/auth/logout', { body: { refreshToken: refreshed.body.refreshToken as string } })

    const text = logText()
    assert.ok(text.length > 0, 'the app logged nothing')
    const secrets: Record<string, string> = {
      password: PASSWORD,
      'wrong password': wrongPassword,
      'access token': accessToken,
      // The signature alone is enough to forge nothing, but it is still part of the credential.
      'access token signature': accessToken.split('.')[2]!,
      'refresh token': refreshToken,
      'rotated access token': refreshed.body.accessToken as string,
      'rotated refresh token': refreshed.body.refreshToken as string,
      'API key': apiKey,
      'rejected API key': badKey,
      'token query parameter': querySecret,
      'api_key query parameter': querySecret2
    }
    for (const [what, secret] of Object.entries(secrets)) {
      assert.ok(secret.length >= 8, `${what} is suspiciously short`)
      assert.ok(!text.includes(secret), `the ${what} appears in the log`)
    }

    const urls = logs().map(line => (line.req as { url?: string } | undefined)?.url).filter((u): u is string => typeof u === 'string')
    assert.ok(urls.includes('/auth/me?token=[REDACTED]&api_key=[REDACTED]'), `no redacted URL among ${JSON.stringify(urls)}`)
    assert.ok(urls.includes('/nowhere?refresh_token=[REDACTED]&x=1'), `no redacted URL among ${JSON.stringify(urls)}`)
  })
})
