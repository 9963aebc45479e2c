/**
 * A real HTTP server on 127.0.0.1 speaking the gateway's protocol, for client and store tests:
 * routes answer JSON, problem+json or SSE written in chunks, with the CORS headers jsdom's
 * XMLHttpRequest needs (the test page's origin differs from the server's).
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Recorded {
  method: string
  path: string
  headers: IncomingMessage['headers']
  body: string
}

export type Handler = (request: Recorded, response: ServerResponse) => void | Promise<void>

export interface TestServer {
  url: string
  requests: Recorded[]
  /** Route "METHOD /path" (path without query) to a handler; later calls replace earlier ones. */
  on(route: string, handler: Handler): void
  close(): Promise<void>
}

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, Accept',
  'Access-Control-Allow-Methods': 'GET, POST, DELETE, PUT, PATCH',
  'Access-Control-Expose-Headers': 'X-Request-ID, Retry-After',
}

export function json(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { ...CORS, 'Content-Type': 'application/json', ...headers })
  response.end(JSON.stringify(body))
}

export function problem(
  response: ServerResponse,
  status: number,
  title: string,
  detail: string,
  headers: Record<string, string> = {},
): void {
  response.writeHead(status, { ...CORS, 'Content-Type': 'application/problem+json', ...headers })
  response.end(JSON.stringify({ type: 'about:blank', title, status, detail, request_id: 'req-problem' }))
}

/** Write SSE frames one chunk at a time (split mid-frame on purpose), with a pause between. */
export async function sse(
  response: ServerResponse,
  events: [string, unknown][],
  options: { requestId?: string; pauseMs?: number; holdOpen?: boolean } = {},
): Promise<void> {
  response.writeHead(200, { ...CORS, 'Content-Type': 'text/event-stream', 'X-Request-ID': options.requestId ?? 'req-stream' })
  for (const [name, data] of events) {
    const frame = `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
    const cut = Math.floor(frame.length / 2)
    response.write(frame.slice(0, cut))
    await new Promise((resolve) => setTimeout(resolve, options.pauseMs ?? 5))
    response.write(frame.slice(cut))
  }
  if (!options.holdOpen) response.end()
}

export async function startServer(): Promise<TestServer> {
  const handlers = new Map<string, Handler>()
  const requests: Recorded[] = []
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.method === 'OPTIONS') {
        response.writeHead(204, CORS)
        response.end()
        return
      }
      const path = (request.url ?? '/').split('?')[0] ?? '/'
      const recorded: Recorded = {
        method: request.method ?? 'GET',
        path: request.url ?? '/',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }
      requests.push(recorded)
      const handler = handlers.get(`${recorded.method} ${path}`)
      if (!handler) {
        problem(response, 404, 'Not Found', `no route ${recorded.method} ${path}`)
        return
      }
      void Promise.resolve(handler(recorded, response)).catch((error: unknown) => {
        problem(response, 500, 'Internal Server Error', String(error))
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    on: (route, handler) => handlers.set(route, handler),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** An unsigned JWT-shaped token carrying `claims` (the app only reads them). */
export function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.signature`
}
