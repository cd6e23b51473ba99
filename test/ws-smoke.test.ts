import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { build, wsConnect } from './helper.js'

describe('ws smoke', () => {
  it('subscribe, publish, receive', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    await srv.request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
    const a = await wsConnect(t, srv, { token: alice })
    assert.equal(a.welcome.user.id, 'alice')
    const sub = await a.command({ type: 'subscribe', room: 'lobby' })
    assert.equal(sub.type, 'reply', JSON.stringify(sub))
    const pub = await a.command({ type: 'publish', room: 'lobby', data: { hi: 1 } })
    assert.equal(pub.type, 'reply', JSON.stringify(pub))
    const msg = await a.next(f => f.type === 'message')
    assert.deepEqual(msg.data, { hi: 1 })
    assert.equal(msg.offset, 1)
    const http = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: 'via http' } })
    assert.equal(http.status, 201)
    assert.equal(http.body.offset, 2)
    assert.equal((await a.next(f => f.type === 'message' && f.offset === 2)).data, 'via http')
    const history = await srv.request('GET', '/rooms/lobby/messages?since=0&epoch=' + msg.epoch, { token: alice })
    assert.deepEqual(history.body.publications.map((p: { offset: number }) => p.offset), [1, 2])
    const presence = await srv.request('GET', '/rooms/lobby/presence', { token: alice })
    assert.deepEqual(presence.body, { users: ['alice'], connections: 1 })
  })
})
