/** The slice of pino the core uses, so it takes Fastify's logger or a bare pino instance. */
export interface Logger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  child(bindings: Record<string, unknown>): Logger
  /** pino's: lets a caller skip building a line nobody will see. Absent: every level is on. */
  isLevelEnabled?(level: string): boolean
}
