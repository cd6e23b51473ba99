import { readConfig, writeConfig, type CliConfig } from './config.js'

/** A failure the CLI reports as one clear line and a non-zero exit code. */
export class CliError extends Error {
  override name = 'CliError'
  constructor (message: string, readonly exitCode = 1) {
    super(message)
  }
}

export interface ApiResponse {
  status: number
  body: unknown
}

/**
 * The REST side of the CLI: requests with the stored access token, one transparent refresh when
 * it has expired (the rotated pair is saved again), and every failure turned into a CliError
 * that says what to do next.
 */
export class Api {
  private config: CliConfig

  constructor (readonly configFile: string, readonly url: string, config: CliConfig = readConfig(configFile)) {
    this.config = config
  }

  get accessToken (): string | undefined {
    return this.config.accessToken
  }

  async request (method: string, path: string, body?: unknown, options: { auth?: boolean } = {}): Promise<ApiResponse> {
    const auth = options.auth ?? true
    let response = await this.send(method, path, body, auth ? this.config.accessToken : undefined)
    if (auth && response.status === 401 && this.config.refreshToken !== undefined) {
      if (await this.refresh()) response = await this.send(method, path, body, this.config.accessToken)
    }
    if (response.status >= 400) throw this.failure(response, auth)
    return response
  }

  /** Exchanges the stored refresh token for a new pair; false when the session is over. */
  async refresh (): Promise<boolean> {
    if (this.config.refreshToken === undefined) return false
    const response = await this.send('POST', '/auth/refresh', { refreshToken: this.config.refreshToken }, undefined)
    if (response.status !== 200) return false
    const pair = response.body as { accessToken: string, refreshToken: string }
    this.save({ ...this.config, accessToken: pair.accessToken, refreshToken: pair.refreshToken })
    return true
  }

  save (config: CliConfig): void {
    this.config = config
    writeConfig(this.configFile, config)
  }

  private async send (method: string, path: string, body: unknown, token: string | undefined): Promise<ApiResponse> {
    const headers: Record<string, string> = {}
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    let res: Response
    try {
      res = await fetch(new URL(path, this.url), { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message
      throw new CliError(`cannot reach the server at ${this.url} (${cause})`)
    }
    const text = await res.text()
    let parsed: unknown = text
    try { parsed = text === '' ? undefined : JSON.parse(text) } catch { /* keep the text */ }
    return { status: res.status, body: parsed }
  }

  private failure (response: ApiResponse, auth: boolean): CliError {
    const body = response.body as { message?: string, code?: string } | undefined
    const detail = typeof body === 'object' && body !== null && typeof body.message === 'string' ? body.message : `HTTP ${response.status}`
    if (response.status === 401 && auth) {
      return new CliError(this.config.accessToken === undefined
        ? `not logged in: run \`switchboard login\` (${detail})`
        : `session expired or invalid: run \`switchboard login\` again (${detail})`)
    }
    return new CliError(`${detail}${body?.code !== undefined ? ` [${body.code}]` : ''}`)
  }
}
