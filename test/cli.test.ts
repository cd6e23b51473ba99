import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { build, PASSWORD, tempDir, TEST_JWT_SECRET, type TestApp } from './helper.js'
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

  it('the documented form, npm run -s cli -- … --json, prints nothing but the JSON on stdout', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    const home = tempDir(t)
    const child = spawn('npm', ['run', '-s', 'cli', '--', 'rooms', 'list', '--json'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: home, npm_config_cache: join(home, 'npm-cache'), SWITCHBOARD_CONFIG: config },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c })
    const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
    assert.equal(code, 0, stderr)
    assert.deepEqual(JSON.parse(stdout), { items: [] })
    // Every command line the docs show runs the CLI that way (without -s, npm's banner comes first).
    for (const file of ['README.md', ...readdirSync(join(ROOT, 'docs')).filter(f => f.endsWith('.md')).map(f => join('docs', f))]) {
      assert.doesNotMatch(readFileSync(join(ROOT, file), 'utf8'), /npm run cli\b/, file)
    }
  })

  it('--version prints the package version; token mints what the server accepts; config check masks secrets', async (t) => {
    const dir = tempDir(t)
    const config = join(dir, 'config.json')
    const version = await cli(config, ['--version'])
    assert.equal(version.code, 0)
    assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version)

    const server = await build(t)
    await server.createUser('alice')
    // The server's settings come from an env file here; the real environment would win over it.
    const envFile = join(dir, 'server.env')
    writeFileSync(envFile, `JWT_SECRET=${TEST_JWT_SECRET}\nDATA_DIR=${dir}\nDATABASE_URL=postgres://app:hunter2@db.internal/sb\n`)
    const minted = await cli(config, ['token', 'alice', '--env-file', envFile, '--ttl', '5m'])
    assert.equal(minted.code, 0, minted.stderr)
    const me = await server.request('GET', '/auth/me', { token: minted.stdout.trim() })
    assert.equal(me.status, 200, me.text)
    assert.equal((me.body as { user: { id: string } }).user.id, 'alice')
    // Another secret's token is refused: the command signs with the server's secret, not its own.
    const other = await cli(config, ['token', 'alice', '--env-file', envFile], { env: { JWT_SECRET: 'another-secret-that-is-long-enough-0123456789abcdef' } })
    assert.equal((await server.request('GET', '/auth/me', { token: other.stdout.trim() })).status, 401)

    const bad = await cli(config, ['token', 'alice', '--role', 'root', '--env-file', envFile])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /--role: user or admin/)
    assert.equal((await cli(config, ['token', '--env-file', envFile])).code, 2)

    const checked = await cli(config, ['config', 'check', '--env-file', envFile])
    assert.equal(checked.code, 0, checked.stderr)
    assert.ok(!checked.stdout.includes(TEST_JWT_SECRET) && !checked.stdout.includes('hunter2'), checked.stdout)
    const effective = JSON.parse(checked.stdout) as { jwt: { secret: string }, databaseUrl: string }
    assert.equal(effective.jwt.secret, '***')
    assert.equal(effective.databaseUrl, 'postgres://app:***@db.internal/sb')
    const invalid = await cli(config, ['config', 'check', '--env-file', envFile], { env: { PORT: 'eighty' } })
    assert.equal(invalid.code, 1)
    assert.match(invalid.stderr, /PORT/)
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
    // A broadcast room turns its join/leave pushes off, and on again.
    const quiet = await cli(config, ['rooms', 'update', 'lobby', '--presence-events', 'off', '--json'])
    assert.equal(quiet.code, 0, quiet.stderr)
    assert.equal((JSON.parse(quiet.stdout) as { presenceEvents: boolean }).presenceEvents, false)
    const loud = await cli(config, ['rooms', 'update', 'lobby', '--presence-events', 'on', '--history-size', '20', '--json'])
    const loudRoom = JSON.parse(loud.stdout) as { presenceEvents: boolean, historySize: number }
    assert.deepEqual([loudRoom.presenceEvents, loudRoom.historySize], [true, 20])
    const bad = await cli(config, ['rooms', 'update', 'lobby', '--presence-events', 'false'])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /--presence-events must be on or off/)
    const empty = await cli(config, ['rooms', 'update', 'lobby'])
    assert.equal(empty.code, 2)
    assert.match(empty.stderr, /at least one setting/)
    const created2 = await cli(config, ['rooms', 'create', 'stage', '--presence-events', 'off', '--json'])
    assert.equal((JSON.parse(created2.stdout) as { presenceEvents: boolean }).presenceEvents, false)
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

  it('users: passwd, disable/enable, role, logout, delete (confirmed); logout --all ends every session', async (t) => {
    const server = await build(t)
    const admin = await loggedIn(t, server, 'root', 'admin')
    const alice = await loggedIn(t, server, 'alice')
    const NEW = 'a brand new passphrase'

    const passwd = await cli(alice, ['users', 'passwd', '--password-stdin'], { stdin: `${PASSWORD}\n${NEW}\n` })
    assert.equal(passwd.code, 0, passwd.stderr)
    assert.match(passwd.stdout, /password changed/)
    assert.equal((await cli(alice, ['rooms', 'list'])).code, 0, 'this session stays signed in')
    await server.login('alice', NEW)
    const wrong = await cli(alice, ['users', 'passwd'], { env: { SWITCHBOARD_PASSWORD: 'not it at all', SWITCHBOARD_NEW_PASSWORD: 'whatever else' } })
    assert.equal(wrong.code, 1)
    assert.match(wrong.stderr, /current password is wrong \[SB_ERR_WRONG_PASSWORD\]/)

    assert.match((await cli(admin, ['users', 'disable', 'alice'])).stdout, /^alice\tuser\tdisabled$/m)
    assert.match((await cli(admin, ['users', 'list', '--q', 'al'])).stdout, /^alice\tuser\tdisabled$/m)
    const refused = await cli(alice, ['rooms', 'list'])
    assert.equal(refused.code, 1, 'a disabled account\'s session is over')
    assert.match((await cli(admin, ['users', 'enable', 'alice'])).stdout, /^alice\tuser\tenabled$/m)
    assert.match((await cli(admin, ['users', 'role', 'alice', 'admin', '--json'])).stdout, /"role":"admin"/)
    assert.equal((await cli(admin, ['users', 'role', 'alice', 'root'])).code, 2)
    assert.equal((await cli(admin, ['users', 'passwd', 'alice', '--password-stdin'], { stdin: `${PASSWORD}\n` })).code, 0)
    await server.login('alice')
    assert.match((await cli(admin, ['users', 'logout', 'alice'])).stdout, /signed alice out everywhere/)

    const unconfirmed = await cli(admin, ['users', 'delete', 'alice'])
    assert.equal(unconfirmed.code, 2, 'no terminal to confirm on, and no --yes')
    assert.equal((await server.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).status, 200)
    assert.equal((await cli(admin, ['users', 'delete', 'alice', '--yes'])).code, 0)
    assert.equal((await server.request('POST', '/auth/register', { body: { username: 'alice', password: PASSWORD } })).body.code, 'SB_ERR_USERNAME_RETIRED')

    const created = await cli(admin, ['users', 'create', 'frank', '--password-stdin'], { stdin: `${PASSWORD}\n` })
    assert.equal(created.code, 0, created.stderr)
    assert.match(created.stdout, /^frank\tuser\tenabled$/m)
    await server.login('frank')

    const all = await cli(admin, ['logout', '--all'])
    assert.equal(all.code, 0, all.stderr)
    assert.match(all.stdout, /signed out everywhere/)
    assert.match((await cli(admin, ['users', 'list'])).stderr, /not logged in/)
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
    const sub = cliProcess(config, ['sub', 'feed', `--since=${epoch}:1`, '--count', '4'])
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

  /** Not valid UTF-8, with 0x00 and 0xFF, and every byte value once. */
  const BYTES = Uint8Array.from([0x00, 0xff, 0xfe, 0xc0, 0x80, ...Array.from({ length: 256 }, (_, i) => 255 - i), 0x0a])

  it('history pages back through the archive; --export writes every message as NDJSON, bytes as base64', async (t) => {
    // A SQLite file: the embedded default, whose history store keeps the archive.
    const server = await build(t, { env: { DATABASE_URL: `sqlite:${join(tempDir(t), 'archive.db')}`, PUBLISH_RATE_PER_USER: '0' } })
    const config = await loggedIn(t, server, 'alice')
    const created = await cli(config, ['rooms', 'create', 'log', '--history-size', '5', '--archive', 'on', '--archive-days', '7', '--json'])
    assert.equal(created.code, 0, created.stderr)
    assert.deepEqual([JSON.parse(created.stdout).archive, JSON.parse(created.stdout).archiveDays], [true, 7])
    const token = await server.login('alice')
    for (let i = 1; i <= 30; i++) {
      const body = i === 7 ? { data: Buffer.from([0, 255, 10]).toString('base64'), encoding: 'base64' } : { data: { i } }
      assert.equal((await server.request('POST', '/rooms/log/messages', { token, body })).status, 201)
    }

    const page = await cli(config, ['history', 'log', '--limit', '10'])
    assert.equal(page.code, 0, page.stderr)
    const newest = page.stdout.trim().split('\n').map(l => JSON.parse(l) as { room: string, offset: number })
    assert.deepEqual(newest.map(p => p.offset), Array.from({ length: 10 }, (_, i) => 30 - i))
    assert.equal(newest[0]!.room, 'log')
    const [, epoch] = /--before 21 --epoch (\S+)/.exec(page.stderr) ?? []
    assert.ok(epoch !== undefined, page.stderr)
    const older = await cli(config, ['history', 'log', '--before', '21', '--epoch', epoch, '--limit', '30'])
    assert.equal(older.code, 0, older.stderr)
    assert.equal(older.stdout.trim().split('\n').length, 20)
    assert.match(older.stderr, /no more messages that way/)

    const exported = await cli(config, ['history', 'log', '--export', '--limit', '7'])
    assert.equal(exported.code, 0, exported.stderr)
    const lines = exported.stdout.trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(lines.map(l => l.offset), Array.from({ length: 30 }, (_, i) => i + 1), 'every message, oldest first, across pages')
    assert.deepEqual([lines[6]!.data, lines[6]!.encoding, lines[6]!.epoch], [Buffer.from([0, 255, 10]).toString('base64'), 'base64', epoch])
    assert.deepEqual(lines[0]!.data, { i: 1 })

    const both = await cli(config, ['history', 'log', '--before', '3', '--after', '1'])
    assert.equal(both.code, 2)
    assert.match(both.stderr, /--before and --after do not go together/)
    const bad = await cli(config, ['history', 'log', '--before', 'ten'])
    assert.equal(bad.code, 2)
  })

  it('pub --file and --binary publish raw bytes over WebSocket on either codec; bad input fails clearly', async (t) => {
    const server = await build(t, { env: { WS_MAX_MESSAGE_BYTES: '1024' } })
    const config = await loggedIn(t, server, 'alice')
    await cli(config, ['rooms', 'create', 'files'])
    const dir = tempDir(t)
    const file = join(dir, 'blob.bin')
    writeFileSync(file, BYTES)

    const json = await cli(config, ['pub', 'files', '--file', file])
    assert.equal(json.code, 0, json.stderr)
    assert.match(json.stdout, new RegExp(`^published ${BYTES.length} bytes to files at offset 1 \\(epoch `))
    const msgpack = await cli(config, ['pub', 'files', '--file', file, '--codec', 'msgpack', '--key', 'k2', '--json'])
    assert.equal(msgpack.code, 0, msgpack.stderr)
    assert.equal((JSON.parse(msgpack.stdout) as { offset: number }).offset, 2)
    const again = await cli(config, ['pub', 'files', '--file', file, '--key', 'k2', '--json'])
    assert.equal((JSON.parse(again.stdout) as { offset: number }).offset, 2, 'same key: not stored twice')
    const piped = await cli(config, ['pub', 'files', '--binary'], { stdin: Uint8Array.of(0xff, 0x00, 0x0a) })
    assert.equal(piped.code, 0, piped.stderr)
    assert.match(piped.stdout, /published 3 bytes to files at offset 3/)

    const history = await server.request('GET', '/rooms/files/messages', { token: await server.login('alice') })
    const stored = history.body.publications as Array<{ data: string, encoding?: string }>
    assert.deepEqual(stored.map(p => [p.encoding, Buffer.from(p.data, 'base64')]), [
      ['base64', Buffer.from(BYTES)],
      ['base64', Buffer.from(BYTES)],
      ['base64', Buffer.from([0xff, 0x00, 0x0a])]
    ])

    const missing = await cli(config, ['pub', 'files', '--file', join(dir, 'nope.bin')])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /cannot read .*nope\.bin \(ENOENT\)/)
    const both = await cli(config, ['pub', 'files', '{"a":1}', '--file', file])
    assert.equal(both.code, 2)
    assert.match(both.stderr, /no DATA: the bytes are the payload/)
    const codec = await cli(config, ['pub', 'files', '--file', file, '--codec', 'cbor'])
    assert.equal(codec.code, 2)
    assert.match(codec.stderr, /--codec must be json or msgpack/)
    const big = join(dir, 'big.bin')
    writeFileSync(big, new Uint8Array(1025))
    const tooBig = await cli(config, ['pub', 'files', '--file', big])
    assert.equal(tooBig.code, 1)
    assert.match(tooBig.stderr, /cannot publish to files: The publish payload is 1025 bytes, over the server's maxMessageBytes \(1024\); it was not sent \[bad_request\]/)
    assert.equal((await server.request('GET', '/rooms/files/messages', { token: await server.login('alice') })).body.publications.length, 3)
  })

  it('sub prints bytes as base64 with "encoding":"base64"; --out writes each to DIR/ROOM-OFFSET.bin, identical, never through a symlink', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    await cli(config, ['rooms', 'create', 'files'])
    const dir = tempDir(t)
    writeFileSync(join(dir, 'blob.bin'), BYTES)
    assert.equal((await cli(config, ['pub', 'files', '--file', join(dir, 'blob.bin')])).code, 0)
    assert.equal((await cli(config, ['pub', 'files', '{"text":"hi"}'])).code, 0)
    assert.equal((await cli(config, ['pub', 'files', '--binary', '--codec', 'msgpack'], { stdin: Uint8Array.of(0x00) })).code, 0)
    const token = await server.login('alice')
    const epoch = (await server.request('GET', '/rooms/files/messages?limit=1', { token })).body.epoch as string

    for (const codec of ['json', 'msgpack']) {
      const printed = await cli(config, ['sub', 'files', `--since=${epoch}:0`, '--count', '3', '--codec', codec])
      assert.equal(printed.code, 0, printed.stderr)
      const lines = printed.stdout.trim().split('\n')
      assert.equal(lines.length, 3)
      const first = JSON.parse(lines[0]!) as Record<string, unknown>
      assert.deepEqual(Object.keys(first), ['room', 'epoch', 'offset', 'data', 'encoding', 'from', 'ts'], codec)
      assert.deepEqual([first.offset, first.encoding, Buffer.from(first.data as string, 'base64')], [1, 'base64', Buffer.from(BYTES)], codec)
      assert.deepEqual(JSON.parse(lines[1]!), { ...JSON.parse(lines[1]!) as object, offset: 2, data: { text: 'hi' } })
      assert.equal((JSON.parse(lines[1]!) as Record<string, unknown>).encoding, undefined)
      assert.deepEqual(JSON.parse(lines[2]!), { ...JSON.parse(lines[2]!) as object, offset: 3, data: 'AA==', encoding: 'base64' })
    }

    // --out: DIR is created; a symlink planted where a file will go is replaced, its target untouched.
    const out = join(dir, 'out', 'nested')
    mkdirSync(out, { recursive: true })
    const outside = join(dir, 'outside.txt')
    writeFileSync(outside, 'keep me')
    symlinkSync(outside, join(out, 'files-1.bin'))
    const written = await cli(config, ['sub', 'files', `--since=${epoch}:0`, '--count', '3', '--out', out, '--codec', 'msgpack'])
    assert.equal(written.code, 0, written.stderr)
    const lines = written.stdout.trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(lines.map(l => [l.offset, l.file, l.size, l.data]), [
      [1, join(out, 'files-1.bin'), BYTES.length, undefined],
      [2, undefined, undefined, { text: 'hi' }],
      [3, join(out, 'files-3.bin'), 1, undefined]
    ])
    assert.deepEqual(readFileSync(join(out, 'files-1.bin')), Buffer.from(BYTES))
    assert.equal(lstatSync(join(out, 'files-1.bin')).isSymbolicLink(), false)
    assert.deepEqual(readFileSync(join(out, 'files-3.bin')), Buffer.from([0x00]))
    assert.equal(readFileSync(outside, 'utf8'), 'keep me')
    assert.deepEqual(readdirSync(out).sort(), ['files-1.bin', 'files-3.bin'], 'nothing else, no temporary file left')

    const fresh = join(dir, 'created', 'on', 'demand')
    const created = await cli(config, ['sub', 'files', `--since=${epoch}:2`, '--count', '1', '--out', fresh])
    assert.equal(created.code, 0, created.stderr)
    assert.deepEqual(readFileSync(join(fresh, 'files-3.bin')), Buffer.from([0x00]))
    const badRoom = await cli(config, ['sub', '../etc', '--out', fresh])
    assert.equal(badRoom.code, 2)
    assert.match(badRoom.stderr, /--out: "\.\.\/etc" is not a room name/)
  })

  it('connect --codec msgpack: stdin lines go as MessagePack, frames come back as JSON lines with bytes as base64', async (t) => {
    const server = await build(t)
    const config = await loggedIn(t, server, 'alice')
    await cli(config, ['rooms', 'create', 'files'])
    const run = await cli(config, ['connect', '--codec', 'msgpack'], {
      stdin: '{"type":"publish","id":1,"room":"files","data":"AP8=","encoding":"base64"}\n{"type":"history","id":2,"room":"files"}\n'
    })
    assert.equal(run.code, 0, run.stderr)
    const frames = run.stdout.trim().split('\n').map(line => JSON.parse(line) as { type: string, id?: number, protocol?: string, result?: { publications?: Array<Record<string, unknown>> } })
    assert.equal(frames[0]?.protocol, 'switchboard.v1.msgpack')
    assert.ok(frames.some(f => f.type === 'reply' && f.id === 1))
    const page = frames.find(f => f.type === 'reply' && f.id === 2)
    assert.deepEqual(page?.result?.publications?.map(p => [p.data, p.encoding]), [['AP8=', 'base64']])
  })
})
