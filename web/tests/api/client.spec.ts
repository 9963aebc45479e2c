import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'

import { ApiClient, type AuthProvider, type StreamEvent } from '../../src/api/client'
import { ApiError } from '../../src/api/errors'
import { json, problem, sse, startServer, type TestServer } from '../helpers/server'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())

interface TestAuth extends AuthProvider {
  token: string
}

function auth(overrides: Partial<AuthProvider> = {}): TestAuth {
  const provider: TestAuth = {
    token: 'good',
    authorization(): string {
      return `Bearer ${provider.token}`
    },
    refresh: vi.fn(async () => false),
    unauthorized: vi.fn(),
    ...overrides,
  }
  return provider
}

describe('ApiClient.request', () => {
  it('sends the credential and returns the data and request id', async () => {
    server.on('GET /v1/collections', (request, response) => {
      json(response, 200, { collections: [], seen: request.headers.authorization }, { 'X-Request-ID': 'abc' })
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const reply = await client.request<{ seen: string }>('GET', '/v1/collections')
    expect(reply.data.seen).toBe('Bearer good')
    expect(reply.requestId).toBe('abc')
  })

  it('maps a problem document to a readable ApiError with Retry-After', async () => {
    server.on('POST /v1/ask', (_request, response) => {
      problem(response, 429, 'Too Many Requests', 'rate limit of 60 requests per minute exceeded', { 'Retry-After': '7' })
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const error = await client.request('POST', '/v1/ask', { json: {} }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect((error as ApiError).status).toBe(429)
    expect((error as ApiError).retryAfterSeconds).toBe(7)
    expect((error as ApiError).message).toBe(
      'Too many requests: rate limit of 60 requests per minute exceeded. Try again in 7 seconds.',
    )
  })

  it('refreshes once on 401 and retries with the new token', async () => {
    server.on('GET /v1/models', (request, response) => {
      if (request.headers.authorization === 'Bearer fresh') json(response, 200, { data: [] })
      else problem(response, 401, 'Unauthorized', 'token expired')
    })
    const provider = auth()
    provider.refresh = vi.fn(async () => {
      provider.token = 'fresh'
      return true
    })
    const client = new ApiClient({ baseUrl: server.url, auth: provider })
    const reply = await client.request<{ data: unknown[] }>('GET', '/v1/models')
    expect(reply.data).toEqual({ data: [] })
    expect(provider.refresh).toHaveBeenCalledTimes(1)
    expect(provider.unauthorized).not.toHaveBeenCalled()
  })

  it('reports a 401 that a refresh cannot fix to the auth provider (back to sign in)', async () => {
    server.on('GET /v1/jobs/x', (_request, response) => problem(response, 401, 'Unauthorized', 'invalid token'))
    const provider = auth()
    const client = new ApiClient({ baseUrl: server.url, auth: provider })
    await expect(client.request('GET', '/v1/jobs/x')).rejects.toMatchObject({ status: 401 })
    expect(provider.refresh).toHaveBeenCalledTimes(1)
    expect(provider.unauthorized).toHaveBeenCalledTimes(1)
  })

  it('turns a refused connection into a readable network error', async () => {
    const client = new ApiClient({ baseUrl: 'http://127.0.0.1:9', auth: auth() })
    const error = (await client.request('GET', '/v1/models').catch((e: unknown) => e)) as ApiError
    expect(error.status).toBe(0)
    expect(error.message).toMatch(/cannot be reached/)
  })
})

describe('ApiClient.stream', () => {
  it('delivers typed events as they arrive, with the request id', async () => {
    server.on('POST /v1/summarize', async (request, response) => {
      expect(JSON.parse(request.body)).toMatchObject({ stream: true })
      await sse(
        response,
        [
          ['delta', { text: 'Paris ' }],
          ['delta', { text: 'is the capital.' }],
          ['usage', { prompt_tokens: 3, completion_tokens: 4 }],
          ['done', { model: 'default', finish_reason: 'stop', request_id: 'req-done' }],
        ],
        { requestId: 'req-header' },
      )
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const events: StreamEvent[] = []
    const reply = await client.stream('/v1/summarize', { text: 'x', stream: true }, (e) => events.push(e))
    expect(events.map((e) => e.event)).toEqual(['delta', 'delta', 'usage', 'done'])
    expect(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('')).toBe('Paris is the capital.')
    expect(reply.requestId).toBe('req-done')
  })

  it('throws an error event as an ApiError after the events before it', async () => {
    server.on('POST /v1/ask', async (_request, response) => {
      await sse(response, [
        ['delta', { text: 'Half' }],
        ['error', { status: 503, detail: 'a backend service is unavailable; retry later' }],
      ])
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const events: StreamEvent[] = []
    const error = (await client.stream('/v1/ask', {}, (e) => events.push(e)).catch((e: unknown) => e)) as ApiError
    expect(events).toHaveLength(1)
    expect(error.status).toBe(503)
    expect(error.message).toMatch(/^The service is unavailable: a backend service is unavailable/)
  })

  it('answers an up-front problem as an ApiError (no stream)', async () => {
    server.on('POST /v1/conversations/c1/messages', (_request, response) => {
      problem(response, 404, 'Not Found', "conversation 'c1' does not exist")
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    await expect(client.stream('/v1/conversations/c1/messages', {}, () => undefined)).rejects.toThrow(
      "Not Found: conversation 'c1' does not exist",
    )
  })

  it('stops reading when aborted', async () => {
    server.on('POST /v1/ask', async (_request, response) => {
      await sse(response, [['delta', { text: 'first' }]], { holdOpen: true })
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const controller = new AbortController()
    const events: StreamEvent[] = []
    const done = client.stream('/v1/ask', {}, (e) => {
      events.push(e)
      controller.abort()
    }, controller.signal)
    await expect(done).rejects.toMatchObject({ name: 'AbortError' })
    expect(events).toHaveLength(1)
  })
})

describe('ApiClient.upload', () => {
  it('posts multipart files with progress and returns the job', async () => {
    server.on('POST /v1/collections/docs/files', (request, response) => {
      expect(request.headers['content-type']).toMatch(/^multipart\/form-data/)
      expect(request.body).toContain('filename="notes.txt"')
      expect(request.headers.authorization).toBe('Bearer good')
      json(response, 202, { job_id: 'j1', status_url: '/v1/jobs/j1', documents: [{ id: 'notes.txt', source: 'notes.txt' }] })
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const progress = vi.fn()
    const file = new File(['Paris is the capital of France.'], 'notes.txt', { type: 'text/plain' })
    const reply = await client.upload<{ job_id: string }>('/v1/collections/docs/files', [file], progress)
    expect(reply.data.job_id).toBe('j1')
    expect(reply.status).toBe(202)
    // XMLHttpRequest's upload progress: the last report covers the whole body.
    expect(progress).toHaveBeenCalled()
    const last = progress.mock.calls.at(-1)?.[0] as { loaded: number; total: number }
    expect(last.loaded).toBe(last.total)
    expect(last.total).toBeGreaterThan(file.size)
  })

  it('maps a rejected file to the problem detail', async () => {
    server.on('POST /v1/collections/docs/files', (_request, response) => {
      problem(response, 415, 'Unsupported Media Type', "'x.exe' has the unsupported type '.exe'")
    })
    const client = new ApiClient({ baseUrl: server.url, auth: auth() })
    const file = new File(['MZ'], 'x.exe')
    await expect(client.upload('/v1/collections/docs/files', [file], () => undefined)).rejects.toThrow(
      "Unsupported Media Type: 'x.exe' has the unsupported type '.exe'",
    )
  })
})
