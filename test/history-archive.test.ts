import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it, type TestContext } from 'node:test'
import { oneShotRequest, type Reply } from '../support/http.js'
import { deleteRedisKeys } from '../support/redis.js'
import { build, skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect, type TestResponse, type WsClient, type WsFrame } from './helper.js'
import { ADMIN, baseEnv, startServer, waitUntilReady, type ServerProcess } from './process.js'
import { createApiKey, msgpackConnect } from './ws-support.js'

/*
 * Reading back through the archive (issue #21) over real sockets: GET /rooms/:id/messages with
 * `before` / `after` and the WebSocket `history` command with the same options, on embedded
 * defaults (the memory engine over the SQLite archive, a real process restarted between) and
 * on the Redis engine (its stream window).
 */

interface Cursor { epoch: string, before?: number, after?: number }
interface Page { epoch: string, publications: WsFrame[], next: Cursor | null, top: { epoch: string, offset: number } }

async function request (server: ServerProcess, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<Reply> {
  return await oneShotRequest(`http://127.0.0.1:${server.port}`, method, path, options)
}

async function tokenOf (server: ServerProcess, username: string, password: string): Promise<string> {
  const login = await request(server, 'POST', '/auth/login', { body: { username, password } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  return login.body.accessToken as string
}

/** Every page of a room backward from the newest (REST), following `next` to its end. */
async function pageBack (get: (query: string) => Promise<Page>, limit: number): Promise<{ offsets: number[], pages: number }> {
  const offsets: number[] = []
  let pages = 0
  // Any offset above the top starts at the newest.
  let query = `before=${Number.MAX_SAFE_INTEGER}&limit=${limit}`
  for (;;) {
    const page = await get(query)
    pages++
    offsets.push(...page.publications.map(p => p.offset))
    if (page.next === null) return { offsets, pages }
    assert.equal(page.next.before, page.publications.at(-1)?.offset)
    query = `before=${page.next.before}&epoch=${page.next.epoch}&limit=${limit}`
  }
}

const descending = (n: number): number[] => Array.from({ length: n }, (_, i) => n - i)

describe('Reading back through the archive on embedded defaults (real process, SQLite)', () => {
  it('pages back to the first message and forward again, over REST and WebSocket, before and after a restart', async (t) => {
    const dataDir = tempDir(t)
    const env = { ...baseEnv(dataDir), LOG_LEVEL: 'warn', WS_MESSAGES_PER_SECOND: '100000', WS_MESSAGES_BURST: '100000', PUBLISH_RATE_PER_USER: '0' }
    const first = await startServer(t, env)
    await waitUntilReady(first)
    const admin = await tokenOf(first, ADMIN.username, ADMIN.password)
    // A window of 10: everything before it is the archive's (on by default on embedded defaults).
    const created = await request(first, 'POST', '/rooms', { token: admin, body: { id: 'chat', historySize: 10, visibility: 'private' } })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    assert.deepEqual([created.body.archive, created.body.archiveDays], [true, 30])
    assert.equal((await request(first, 'POST', '/auth/register', { body: { username: 'eve', password: 'eve password 123' } })).status, 201)

    const base = { url: `http://127.0.0.1:${first.port}` }
    const publisher = await wsConnect(t, base, { token: admin })
    const packed = await msgpackConnect(t, base, admin)
    const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80])
    let epoch = ''
    for (let i = 1; i <= 120; i++) {
      const reply = i === 60
        ? await packed.command({ type: 'publish', room: 'chat', data: bytes })
        : await publisher.command({ type: 'publish', room: 'chat', data: { i } })
      assert.equal(reply.type, 'reply', JSON.stringify(reply))
      epoch = reply.result.epoch as string
    }

    const rest = (server: ServerProcess, token: string) => async (query: string): Promise<Page> => {
      const res = await request(server, 'GET', `/rooms/chat/messages?${query}`, { token })
      assert.equal(res.status, 200, JSON.stringify(res.body))
      return res.body as Page
    }
    const back = await pageBack(rest(first, admin), 25)
    assert.deepEqual(back, { offsets: descending(120), pages: 5 })

    // The recovery window is still the window: `since` from the start is told it missed some.
    const recovery = await request(first, 'GET', `/rooms/chat/messages?since=0&epoch=${epoch}&limit=100`, { token: admin })
    assert.deepEqual([recovery.body.complete, recovery.body.publications.length], [false, 10])

    // Authorization as for history: a stranger to the private room does not learn it exists.
    const eve = await tokenOf(first, 'eve', 'eve password 123')
    assert.equal((await request(first, 'GET', '/rooms/chat/messages?before=50', { token: eve })).status, 404)
    // Bad combinations are refused with a clear message.
    const both = await request(first, 'GET', '/rooms/chat/messages?before=5&after=2', { token: admin })
    assert.equal(both.status, 400)
    assert.match(both.body.message, /`before` and `after` do not go together/)
    const mixed = await request(first, 'GET', `/rooms/chat/messages?before=5&since=2&epoch=${epoch}`, { token: admin })
    assert.equal(mixed.status, 400)
    assert.match(mixed.body.message, /`since`/)
    assert.equal((await request(first, 'GET', '/rooms/chat/messages?before=-1', { token: admin })).status, 400)
    assert.equal((await request(first, 'GET', '/rooms/chat/messages?after=1&limit=1001', { token: admin })).status, 400)

    // A restart: every message is still there to page through, over both codecs.
    first.child.kill('SIGTERM')
    await first.exited
    const second = await startServer(t, env, { port: first.port })
    await waitUntilReady(second)
    const adminAgain = await tokenOf(second, ADMIN.username, ADMIN.password)
    assert.deepEqual(await pageBack(rest(second, adminAgain), 50), { offsets: descending(120), pages: 3 })

    const ws = await wsConnect(t, base, { token: adminAgain })
    const forward: number[] = []
    let cursor: Cursor | null = { epoch, after: 0 }
    while (cursor !== null) {
      const reply: WsFrame = await ws.command({ type: 'history', room: 'chat', ...cursor, limit: 40 })
      assert.equal(reply.type, 'reply', JSON.stringify(reply))
      const page = reply.result as Page
      forward.push(...page.publications.map(p => p.offset))
      const at60 = page.publications.find(p => p.offset === 60)
      if (at60 !== undefined) assert.deepEqual([at60.encoding, Buffer.from(at60.data as string, 'base64').equals(bytes)], ['base64', true])
      cursor = page.next
    }
    assert.deepEqual(forward, descending(120).reverse())
    const wsBoth = await ws.command({ type: 'history', room: 'chat', before: 3, after: 1 })
    assert.deepEqual([wsBoth.type, wsBoth.error?.code], ['error', 'bad_request'])

    const packedAgain = await msgpackConnect(t, base, adminAgain)
    const binary = await packedAgain.command({ type: 'history', room: 'chat', before: 61, limit: 2 })
    const binaryPage = binary.result as Page
    assert.deepEqual(binaryPage.publications.map(p => p.offset), [60, 59])
    assert.ok(Buffer.from(binaryPage.publications[0]!.data as Uint8Array).equals(bytes), 'bytes as sent over MessagePack')
    assert.deepEqual(binaryPage.next, { epoch, before: 59 })

    // Deleting the room deletes its archive: a new room of that name starts empty.
    assert.equal((await request(second, 'DELETE', '/rooms/chat', { token: adminAgain })).status, 204)
    assert.equal((await request(second, 'POST', '/rooms', { token: adminAgain, body: { id: 'chat' } })).status, 201)
    const fresh = await request(second, 'GET', '/rooms/chat/messages?before=1000', { token: adminAgain })
    assert.deepEqual([fresh.body.publications, fresh.body.next, fresh.body.top.offset], [[], null, 0])
    assert.notEqual(fresh.body.top.epoch, epoch)
  })
})

describe('The archive on every publish path', () => {
  it('a broadcast from the server API keeps what leaves the window, like any publish', async (t) => {
    const srv = await build(t, { env: { DATABASE_URL: `sqlite:${tempDir(t)}/archive.db`, PUBLISH_RATE_PER_USER: '0' } })
    const owner = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token: owner, body: { id: 'log', historySize: 2, archive: true, archiveDays: 7 } })).status, 201)
    const backend = await createApiKey(srv, ['admin'])
    for (let i = 1; i <= 4; i++) {
      // Alternately through the room's route and the broadcast: both tell the store the room archives.
      const res = i % 2 === 1
        ? await srv.request('POST', '/rooms/log/messages', { token: owner, body: { data: i } })
        : await srv.request('POST', '/broadcast', { apiKey: backend.key, body: { rooms: ['log'], data: i } })
      assert.ok(res.status === 201 || res.status === 200, res.text)
    }
    const page = await srv.request('GET', '/rooms/log/messages?before=100&limit=10', { token: owner })
    assert.equal(page.status, 200, page.text)
    assert.deepEqual((page.body as Page).publications.map(p => p.offset), [4, 3, 2, 1])
  })
})

const redisSkip = await skipUnlessRedis()

function redisEnv (t: TestContext): Record<string, string> {
  const prefix = `sbtest:${randomBytes(6).toString('hex')}:`
  t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
  return { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix }
}

describe('SQLite full: nothing acknowledged that is not committed', () => {
  it('a publish the database cannot store (SQLITE_FULL) is refused as unavailable and takes no offset; once there is room, publishing goes on', async (t) => {
    const srv = await build(t, { env: { DATABASE_URL: `sqlite:${tempDir(t)}/full.db`, PUBLISH_RATE_PER_USER: '0' } })
    const owner = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token: owner, body: { id: 'full', archive: true } })).status, 201)
    const acknowledged: number[] = []
    const publish = async (data: unknown): Promise<TestResponse> => await srv.request('POST', '/rooms/full/messages', { token: owner, body: { data } })
    const first = await publish('before')
    assert.equal(first.status, 201, first.text)
    acknowledged.push(first.body.offset as number)

    // The file may not grow: SQLite answers "database or disk is full", as on a full disk.
    const connection = srv.app.store.sqlite!
    connection.pragma(`max_page_count = ${connection.pragma('page_count', { simple: true }) as number}`)
    let refused: TestResponse | undefined
    for (let i = 0; i < 200 && refused === undefined; i++) {
      const res = await publish('x'.repeat(30_000))
      if (res.status === 201) acknowledged.push(res.body.offset as number)
      else refused = res
    }
    assert.ok(refused !== undefined, 'a publish was refused once the file was full')
    assert.equal(refused.status, 503, refused.text)
    assert.equal(refused.body.code, 'SB_ERR_UNAVAILABLE')

    connection.pragma('max_page_count = 1073741823')
    const again = await publish('after')
    assert.equal(again.status, 201, again.text)
    assert.equal(again.body.offset, acknowledged.length + 1, 'the refused publish took no offset')
    acknowledged.push(again.body.offset as number)
    const page = await srv.request('GET', '/rooms/full/messages?after=0&limit=1000', { token: owner })
    assert.equal(page.status, 200, page.text)
    assert.deepEqual((page.body.publications as Array<{ offset: number }>).map(p => p.offset), acknowledged)
  })
})

describe('Reading back on the Redis engine (its stream window)', { skip: redisSkip }, () => {
  it('pages back and forward over REST and WebSocket within the window', async (t) => {
    const api = await build(t, { env: { ...redisEnv(t), PUBLISH_RATE_PER_USER: '0' } })
    const token = await api.userToken('alice')
    assert.equal((await api.request('POST', '/rooms', { token, body: { id: 'feed', historySize: 30 } })).status, 201)
    const ws: WsClient = await wsConnect(t, api, { token })
    let epoch = ''
    for (let i = 1; i <= 40; i++) epoch = (await ws.command({ type: 'publish', room: 'feed', data: { i } })).result.epoch as string

    const offsets: number[] = []
    let query = `before=${Number.MAX_SAFE_INTEGER}&limit=8`
    for (;;) {
      const res = await api.request('GET', `/rooms/feed/messages?${query}`, { token })
      assert.equal(res.status, 200, res.text)
      const page = res.body as Page
      offsets.push(...page.publications.map(p => p.offset))
      if (page.next === null) break
      query = `before=${page.next.before}&epoch=${page.next.epoch}&limit=8`
    }
    // The window of 30 is all the Redis engine keeps (the cluster archive is PostgreSQL's, later).
    assert.deepEqual(offsets, descending(40).slice(0, 30))

    const forward = await ws.command({ type: 'history', room: 'feed', after: 35, epoch, limit: 3 })
    assert.deepEqual([(forward.result as Page).publications.map(p => p.offset), (forward.result as Page).next], [[36, 37, 38], { epoch, after: 38 }])
    const last = await ws.command({ type: 'history', room: 'feed', after: 38, limit: 3 })
    assert.deepEqual([(last.result as Page).publications.map(p => p.offset), (last.result as Page).next], [[39, 40], null])
    const elsewhere = await ws.command({ type: 'history', room: 'feed', before: 10, epoch: 'gone-epoch' })
    assert.deepEqual([(elsewhere.result as Page).publications, (elsewhere.result as Page).next], [[], null])
  })
})
