import assert from 'node:assert/strict'
import net from 'node:net'
import { describe, it } from 'node:test'
import { wsConnect } from '../helper.js'
import { assertCommandError, assertErrorBody, assertReply, commandFixture, refusal } from '../ws-support.js'
import { hooksEnv, startBackend, type HookAnswer, type HookCall } from '../hook-backend.js'

/*
 * The hooks attacked from both ends. A client controls the data a publish hook is sent: it
 * must stay data, never become fields of the call. A backend (compromised, buggy, or an
 * impostor behind a hijacked address) controls the answers: oversized, not JSON, the wrong
 * shape, huge info or replacements, a reason full of control characters, or no HTTP at all.
 * Each ends as a clear error for that one call; the process and the other calls go on.
 */

describe('hostile: hooks', () => {
  it('client data cannot break out of the publish call\'s `data`', async (t) => {
    const backend = await startBackend(t)
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'publish'))
    const ws = await wsConnect(t, srv, { token: alice })
    const attacks: unknown[] = [
      '"},"hook":"connect","user":{"id":"root"},"x":{"',
      { hook: 'connect', user: { id: 'root', role: 'admin' }, refuse: null },
      ['\u2028\u2029', '\u0000', '</script>']
    ]
    for (const data of attacks) {
      assertReply(await ws.command({ type: 'publish', room: 'lobby', data }))
      const call = backend.of('publish').at(-1)!
      assert.equal(call.body.hook, 'publish')
      assert.deepEqual(call.body.user, { id: 'alice', kind: 'user', role: 'user' })
      assert.deepEqual(call.body.data, data)
    }
  })

  it('answers that are not the hook\'s answer fail that call closed (503 / unavailable) and nothing else', async (t) => {
    let answer: (call: HookCall) => HookAnswer = () => ({})
    const backend = await startBackend(t, call => answer(call))
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'connect,publish', { WS_MAX_MESSAGE_BYTES: '1024' }))
    const hostile: Record<string, HookAnswer> = {
      'not JSON': { status: 200, body: 'allow' },
      'an array': [],
      'refuse of the wrong type': { refuse: 'no' },
      'an answer over the size cap': { status: 200, body: JSON.stringify({ data: 'x'.repeat(3 * 1024 * 1024) }) },
      'a replacement over WS_MAX_MESSAGE_BYTES': { data: 'x'.repeat(2000) },
      'a replacement of invalid base64': { data: '!!!', encoding: 'base64' },
      'a replacement nested 1000 deep': { status: 200, body: '{"data":' + '['.repeat(1000) + ']'.repeat(1000) + '}' },
      'a redirect': { status: 302, body: '' },
      'a server error': { status: 500, body: '{"refuse":{"reason":"x"}}' }
    }
    for (const [what, reply] of Object.entries(hostile)) {
      answer = call => call.hook === 'publish' ? reply : {}
      const res = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: 'hello' } })
      assert.equal(res.status, 503, `${what}: ${res.text}`)
      assertErrorBody(res.body, 503, 'SB_ERR_HOOK_UNAVAILABLE')
    }
    answer = call => call.hook === 'connect' ? { info: { blob: 'x'.repeat(5000) } } : {}
    assertErrorBody((await refusal(t, srv, { token: alice })).body, 503, 'SB_ERR_HOOK_UNAVAILABLE')
    answer = call => call.hook === 'connect' ? { status: 200, body: '{"info":' + '['.repeat(500) + ']'.repeat(500) + '}' } : {}
    assertErrorBody((await refusal(t, srv, { token: alice })).body, 503, 'SB_ERR_HOOK_UNAVAILABLE')

    // The node is unharmed: a sane answer goes through.
    answer = () => ({})
    const ws = await wsConnect(t, srv, { token: alice })
    assertReply(await ws.command({ type: 'publish', room: 'lobby', data: 'fine' }))
  })

  it('a refusal\'s reason reaches the client as one short line of text', async (t) => {
    const backend = await startBackend(t, () => ({ refuse: { reason: '\u001b[31mred\r\nSet-Cookie: x=1\u0000' + 'y'.repeat(10_000) } }))
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'connect,subscribe'))
    const refused = await refusal(t, srv, { token: alice })
    assertErrorBody(refused.body, 403, 'SB_ERR_HOOK_REFUSED')
    const message = String(refused.body.message)
    assert.ok(message.length < 300, `cut: ${message.length} characters`)
    // eslint-disable-next-line no-control-regex -- what must not be there
    assert.doesNotMatch(message, /[\u0000-\u001f]/)
    assert.match(message, /red Set-Cookie: x=1 y/)
  })

  it('a peer that does not speak HTTP is a backend that is down', async (t) => {
    const garbage = net.createServer(socket => { socket.end('garbage\r\n\r\n') })
    await new Promise<void>(resolve => garbage.listen(0, '127.0.0.1', resolve))
    t.after(() => { garbage.close() })
    const { port } = garbage.address() as net.AddressInfo
    const { srv, alice } = await commandFixture(t, hooksEnv(`http://127.0.0.1:${port}/`, 'subscribe'))
    const ws = await wsConnect(t, srv, { token: alice })
    assertCommandError(await ws.command({ type: 'subscribe', room: 'lobby' }), 'unavailable')
    assertCommandError(await ws.command({ type: 'subscribe', room: 'lobby' }), 'unavailable')
  })
})
