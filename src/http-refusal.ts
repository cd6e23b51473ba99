import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { Errors, httpAnswer, type HttpAnswer } from './errors.js'

/** The answer to a request node's HTTP parser refused, or one a deadline cut, by node's error code. */
export function clientErrorRefusal (code: string | undefined): HttpAnswer {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return httpAnswer(new Errors.RequestTimeout())
  if (code === 'HPE_HEADER_OVERFLOW') return httpAnswer(new Errors.HeadersTooLarge())
  return httpAnswer(new Errors.BadRequest('Malformed HTTP request'))
}

/**
 * An HTTP answer written straight to a socket that Fastify does not own (an upgrade it never
 * routes, a connection over a cap), then the end of it. `Connection: close` and the destroy on
 * 'finish' mean the socket is gone as soon as the answer is flushed.
 */
export function writeRefusal (socket: Duplex, answer: HttpAnswer): void {
  // Nobody else listens on this socket any more: a reset by the client must end it, not the process.
  socket.on('error', destroyOnError)
  if (!socket.writable) {
    socket.destroy()
    return
  }
  const { statusCode } = answer
  const reason = STATUS_CODES[statusCode] ?? 'Error'
  const body = JSON.stringify({ statusCode, code: answer.code, error: reason, message: answer.message })
  const extra = Object.entries(answer.headers ?? {}).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.once('finish', socket.destroy)
  socket.end(`HTTP/1.1 ${statusCode} ${reason}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`)
}

/** An 'error' listener for a raw socket between owners: without one, a client's reset would crash the process. */
export function destroyOnError (this: Duplex): void {
  this.destroy()
}
