import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { oneShotRequest, type Reply } from '../support/http.js'
import { tempDir, wsConnect, type WsFrame } from './helper.js'
import { ADMIN, baseEnv, startServer, waitUntilReady, type ServerProcess } from './process.js'
import { msgpackConnect } from './ws-support.js'

/*
 * Durable history on embedded defaults, with the real server process: publish, `kill -9` as
 * soon as the acknowledgements are in, start again on the same SQLite file, and check that
 * every acknowledged publication is there at its epoch and offset, and that a client that
 * was connected before resumes with `recovered: true` and exactly what it missed.
 */

interface Position { epoch: string, offset: number }

async function request (server: ServerProcess, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<Reply> {
  return await oneShotRequest(`http://127.0.0.1:${server.port}`, method, path, options)
}

async function adminToken (server: ServerProcess): Promise<string> {
  const login = await request(server, 'POST', '/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  return login.body.accessToken as string
}

async function killHard (server: ServerProcess): Promise<void> {
  server.child.kill('SIGKILL')
  const { signal } = await server.exited
  assert.equal(signal, 'SIGKILL')
}

describe('Durable history across kill -9 (real process, SQLite)', () => {
  it('keeps every acknowledged publication, numbers on from it, and lets a client recover exactly', async (t) => {
    const dataDir = tempDir(t)
    const env = {
      ...baseEnv(dataDir),
      LOG_LEVEL: 'warn',
      WS_MESSAGES_PER_SECOND: '100000',
      WS_MESSAGES_BURST: '100000',
      PUBLISH_RATE_PER_USER: '0'
    }
    const first = await startServer(t, env)
    await waitUntilReady(first)
    const token = await adminToken(first)
    const base = { url: `http://127.0.0.1:${first.port}` }
    for (const body of [{ id: 'chat', historySize: 1000 }, { id: 'quiet', historySize: 0 }]) {
      const created = await request(first, 'POST', '/rooms', { token, body })
      assert.equal(created.status, 201, JSON.stringify(created.body))
    }

    // A subscriber that was there before the restart, and what it saw.
    const watcher = await wsConnect(t, base, { token })
    const subscribed = await watcher.command({ type: 'subscribe', room: 'chat' })
    const start = subscribed.result as Position
    assert.equal(start.offset, 0)

    const publisher = await wsConnect(t, base, { token })
    const packed = await msgpackConnect(t, base, token)
    const notUtf8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3, 0x00, 0xe2, 0x82])
    const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    const sentBytes = new Map<number, Buffer>()
    const sentJson = new Map<number, unknown>()

    // The first 10, seen live by the watcher.
    for (let i = 0; i < 10; i++) {
      const reply = await publisher.command({ type: 'publish', room: 'chat', data: { i } })
      sentJson.set((reply.result as Position).offset, { i })
    }
    await watcher.next(f => f.type === 'message' && f.room === 'chat' && f.offset === 10)
    const seen = { epoch: start.epoch, offset: 10 }
    watcher.socket.terminate()

    // A burst in flight together (JSON and binary, WebSocket and HTTP), then kill -9 at the last acknowledgement.
    const burst: Array<Promise<void>> = []
    for (let i = 10; i < 60; i++) {
      burst.push(publisher.command({ type: 'publish', room: 'chat', data: { i } }).then((reply) => {
        assert.equal(reply.type, 'reply', JSON.stringify(reply))
        sentJson.set((reply.result as Position).offset, { i })
      }))
    }
    for (const bytes of [notUtf8, allBytes]) {
      burst.push(packed.command({ type: 'publish', room: 'chat', data: bytes }).then((reply) => {
        assert.equal(reply.type, 'reply', JSON.stringify(reply))
        sentBytes.set((reply.result as Position).offset, bytes)
      }))
    }
    burst.push((async () => {
      const upload = await fetch(`${base.url}/rooms/chat/messages`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: new Uint8Array(notUtf8) })
      const answer = await upload.text()
      assert.equal(upload.status, 201, answer)
      sentBytes.set((JSON.parse(answer) as Position).offset, notUtf8)
    })())
    const quiet: Position[] = []
    for (let i = 0; i < 3; i++) {
      const reply = await publisher.command({ type: 'publish', room: 'quiet', data: i })
      quiet.push(reply.result as Position)
    }
    await Promise.all(burst)
    await killHard(first)

    const total = sentJson.size + sentBytes.size
    assert.equal(total, 63)
    assert.deepEqual([...sentJson.keys(), ...sentBytes.keys()].sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i + 1), 'acknowledged offsets are 1..63')

    const second = await startServer(t, env, { port: first.port })
    await waitUntilReady(second)

    // The watcher comes back with where it was: recovered, exactly what it missed.
    const again = await wsConnect(t, base, { token })
    const recovered = await again.command({ type: 'subscribe', room: 'chat', since: seen })
    assert.equal(recovered.type, 'reply', JSON.stringify(recovered))
    const result = recovered.result as { epoch: string, offset: number, recovered: boolean, publications: WsFrame[] }
    assert.equal(result.recovered, true)
    assert.equal(result.epoch, start.epoch)
    assert.equal(result.offset, total)
    assert.deepEqual(result.publications.map(p => p.offset), Array.from({ length: total - 10 }, (_, i) => i + 11))
    for (const p of result.publications) {
      const bytes = sentBytes.get(p.offset)
      if (bytes === undefined) assert.deepEqual(p.data, sentJson.get(p.offset))
      else assert.deepEqual([p.encoding, Buffer.from(p.data as string, 'base64').equals(bytes)], ['base64', true], `bytes at ${p.offset}`)
    }

    // Bytes over MessagePack, as sent, and the whole history from the start.
    const packedAgain = await msgpackConnect(t, base, token)
    const fromStart = await packedAgain.command({ type: 'subscribe', room: 'chat', since: { epoch: start.epoch, offset: 0 } })
    assert.equal(fromStart.result.recovered, true)
    const binaries = (fromStart.result.publications as WsFrame[]).filter(p => sentBytes.has(p.offset))
    assert.equal(binaries.length, 3)
    assert.ok(binaries.every(p => Buffer.from(p.data as Uint8Array).equals(sentBytes.get(p.offset)!)), 'the bytes as sent')

    // A room keeping no history kept its position; numbering goes on from it.
    const quietNow = await again.command({ type: 'subscribe', room: 'quiet', since: quiet[2] })
    assert.deepEqual([quietNow.result.epoch, quietNow.result.offset, quietNow.result.recovered], [quiet[0]!.epoch, 3, true])
    const next = await again.command({ type: 'publish', room: 'quiet', data: 'after' })
    assert.deepEqual(next.result, { epoch: quiet[0]!.epoch, offset: 4 })
    const nextChat = await again.command({ type: 'publish', room: 'chat', data: 'after' })
    assert.deepEqual(nextChat.result, { epoch: start.epoch, offset: total + 1 })
  })
})
