import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { statSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { build, PASSWORD, tempDir, type TestApp } from './helper.js'
import { ROOT, runCli as cli } from './process.js'

/** Starts the CLI and returns the live child with its collected output (for long-running commands). */
function cliProcess (configFile: string, args: string[]): { child: ReturnType<typeof spawn>, stdout: () => string, exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', SWITCHBOARD_CONFIG: configFile },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { stdout += c })
  child.stderr!.resume()
  return { child, stdout: () => stdout, exited: new Promise(resolve => child.once('exit', code => resolve(code))) }
}

async function loggedIn (t: TestContext, server: TestApp, user: string, role: 'user' | 'admin' = 'user'): Promise<string> {
  const config = join(tempDir(t), 'config.json')
  await server.createUser(user, role)
  const res = await cli(config, ['login', '--url', server.url, '--username', user, '--password-stdin'], { stdin: PASSWORD + '\n' })
  assert.equal(res.code, 0, res.stderr)
  return config
}

describe('switchboard CLI', () => {
  it('login keeps the session in a 0600 file; wrong password fails clearly', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    assert.equal(statSync(config).mode & 0o777, 0o600)
    const saved = JSON.parse(readFileSync(config, 'utf8')) as Record<string, string>
    assert.equal(saved.url, server.url)
    assert.equal(saved.username, 'alice')
    assert.equal(typeof saved.refreshToken, 'string')

    const wrong = await cli(join(tempDir(t), 'c.json'), ['login', '--url', server.url, '--username', 'alice', '--password-stdin'], { stdin: 'nope nope nope' })
    assert.equal(wrong.code, 1)
    assert.match(wrong.stderr, /Invalid username or password/)
  })

  it('manages rooms and members end to end', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    await server.createUser('bob')
    const created = await cli(config, ['rooms', 'create', 'lobby', '--name', 'The Lobby', '--private', '--history-size', '10'])
    assert.equal(created.code, 0, created.stderr)
    assert.match(created.stdout, /^lobby\tprivate\tThe Lobby$/m)
    assert.equal((await cli(config, ['rooms', 'add-member', 'lobby', 'bob', '--role', 'moderator'])).code, 0)
    const members = await cli(config, ['rooms', 'members', 'lobby'])
    assert.deepEqual(members.stdout.trim().split('\n').sort(), ['alice\towner', 'bob\tmoderator'])
    const list = await cli(config, ['rooms', 'list', '--json'])
    assert.deepEqual((JSON.parse(list.stdout) as { items: Array<{ id: string }> }).items.map(r => r.id), ['lobby'])
    const get = await cli(config, ['rooms', 'get', 'lobby', '--json'])
    assert.equal((JSON.parse(get.stdout) as { historySize: number }).historySize, 10)
    assert.equal((await cli(config, ['rooms', 'remove-member', 'lobby', 'bob'])).code, 0)
    assert.equal((await cli(config, ['rooms', 'delete', 'lobby'])).code, 0)
    const gone = await cli(config, ['rooms', 'get', 'lobby'])
    assert.equal(gone.code, 1)
    assert.match(gone.stderr, /Room not found \[SB_ERR_ROOM_NOT_FOUND\]/)
  })

  it('publishes JSON over HTTP; bad JSON input is refused before any request', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    await cli(config, ['rooms', 'create', 'news'])
    const ok = await cli(config, ['pub', 'news', '{"text":"hi"}', '--key', 'k1'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.match(ok.stdout, /published to news at offset 1/)
    const again = await cli(config, ['pub', 'news', '{"text":"hi"}', '--key', 'k1'])
    assert.match(again.stdout, /offset 1/)
    const bad = await cli(config, ['pub', 'news', '{text: hi}'])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /DATA is not valid JSON/)
    const history = await server.request('GET', '/rooms/news/messages', { token: await server.login('alice') })
    assert.equal(history.body.publications.length, 1)
  })

  it('API keys: admins create, list and revoke; others get 403', async (t) => {
    const server = await build(t)
    const admin = await loggedIn(t, server, 'root', 'admin')
    const created = await cli(admin, ['keys', 'create', 'sensors', '--scope', 'publish:sensors.*', '--json'])
    assert.equal(created.code, 0, created.stderr)
    const { key, apiKey } = JSON.parse(created.stdout) as { key: string, apiKey: { id: string } }
    assert.match(key, /^sbk_/)
    assert.match((await cli(admin, ['keys', 'list'])).stdout, /sensors\tsbk_.*publish:sensors\.\*/)
    assert.equal((await cli(admin, ['keys', 'delete', apiKey.id])).code, 0)
    const user = await loggedIn(t, server, 'alice')
    const refused = await cli(user, ['keys', 'list'])
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, /Administrators only/)
    const noScope = await cli(admin, ['keys', 'create', 'x'])
    assert.equal(noScope.code, 2)
  })

  it('says clearly when the server is down, when not logged in, and on usage errors', async (t) => {
    const server = await build(t)
    const fresh = join(tempDir(t), 'none.json')
    const down = await cli(fresh, ['rooms', 'list', '--url', 'http://127.0.0.1:1'])
    assert.equal(down.code, 1)
    assert.match(down.stderr, /cannot reach the server at http:\/\/127\.0\.0\.1:1/)
    const anonymous = await cli(fresh, ['rooms', 'list', '--url', server.url])
    assert.equal(anonymous.code, 1)
    assert.match(anonymous.stderr, /not logged in: run `switchboard login`/)
    const unknown = await cli(fresh, ['frobnicate'])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /unknown command/)
    const badFlag = await cli(fresh, ['rooms', 'list', '--nope'])
    assert.equal(badFlag.code, 2)
    const help = await cli(fresh, ['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /Usage:/)
  })

  it('refreshes an expired access token with the stored refresh token', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    const saved = JSON.parse(readFileSync(config, 'utf8')) as Record<string, string>
    // Replace the access token with one that fails verification; the refresh token still works.
    const { writeFileSync } = await import('node:fs')
    writeFileSync(config, JSON.stringify({ ...saved, accessToken: 'expired.or.garbage' }), { mode: 0o600 })
    const list = await cli(config, ['rooms', 'list'])
    assert.equal(list.code, 0, list.stderr)
    const after = JSON.parse(readFileSync(config, 'utf8')) as Record<string, string>
    assert.notEqual(after.accessToken, 'expired.or.garbage')
    assert.notEqual(after.refreshToken, saved.refreshToken)
  })

  it('connect: sends stdin lines as frames and prints what the server says', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    const run = await cli(config, ['connect'], { stdin: '{"type":"ping","id":1}\nnot json\n{"type":"nope","id":2}\n' })
    const frames = run.stdout.trim().split('\n').map(line => JSON.parse(line) as { type: string, id?: number })
    assert.equal(frames[0]?.type, 'welcome')
    assert.ok(frames.some(f => f.type === 'reply' && f.id === 1))
    assert.ok(frames.some(f => f.type === 'error' && f.id === 2))
    assert.match(run.stderr, /not JSON, not sent/)
    assert.match(run.stderr, /closed: 1000/)
    assert.equal(run.code, 0)
  })

  it('sub prints one JSON line per message, resumes with --since, and survives a kick-free reconnect', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    await cli(config, ['rooms', 'create', 'feed'])
    const token = await server.login('alice')
    for (const n of [1, 2, 3]) await server.request('POST', '/rooms/feed/messages', { token, body: { data: { n } } })

    // Resume after offset 1: exactly 2 and 3 come back, then a live one.
    const epoch = (await server.request('GET', '/rooms/feed/messages?limit=1', { token })).body.epoch as string
    const sub = cliProcess(config, ['sub', 'feed', '--since', `${epoch}:1`, '--count', '4'])
    t.after(() => { sub.child.kill('SIGKILL') })
    const lines = (): Array<{ offset: number, data: { n: number } }> => sub.stdout().trim().split('\n').filter(Boolean).map(l => JSON.parse(l) as { offset: number, data: { n: number } })
    const deadline = Date.now() + 15_000
    while (lines().length < 2 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    await server.request('POST', '/rooms/feed/messages', { token, body: { data: { n: 4 } } })
    // Cut the subscriber's socket from the server side (not a kick): the SDK reconnects and resumes.
    while (server.app.realtime.listConnections({ room: 'feed' }).length === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    for (const socket of server.app.websocketServer.clients) socket.terminate()
    await server.request('POST', '/rooms/feed/messages', { token, body: { data: { n: 5 } } })
    assert.equal(await sub.exited, 0)
    assert.deepEqual(lines().map(l => l.offset), [2, 3, 4, 5])
    assert.deepEqual(lines().map(l => l.data.n), [2, 3, 4, 5])
  })

  it('sub: a bad --since is a usage error; a room you may not read fails clearly', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    const bad = await cli(config, ['sub', 'feed', '--since', 'nope'])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /--since must be EPOCH:OFFSET/)
    const missing = await cli(config, ['sub', 'nowhere', '--count', '1'])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /cannot subscribe to nowhere: .*\[not_found\]/)
  })
})
