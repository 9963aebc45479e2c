import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { applyEvent, newReply, useChatStore } from '../../src/stores/chat'
import { storeContext } from '../helpers/app'
import { json, problem, sse, startServer, type TestServer } from '../helpers/server'

let server: TestServer

const CITATION = {
  source: 1,
  document_id: 'lighthouse.md',
  chunk_id: 'lighthouse.md#0',
  text: 'The Harbor Lighthouse was built in 1874.',
  score: 0.8,
  metadata: { source: 'lighthouse.md' },
}

beforeAll(async () => {
  server = await startServer()
  server.on('POST /v1/conversations', (request, response) => {
    const body = JSON.parse(request.body) as { collection: string | null; model: string }
    json(response, 201, { id: 'c1', model: body.model, collection: body.collection, title: '', created_at: 1, messages: [] })
  })
})
afterAll(() => server.close())
beforeEach(() => {
  localStorage.clear()
  sessionStorage.clear()
})

describe('applyEvent', () => {
  it('builds a reply from sources, deltas, citations and done', () => {
    const reply = newReply()
    applyEvent(reply, { event: 'sources', data: { sources: [CITATION] } })
    applyEvent(reply, { event: 'delta', data: { text: 'Built in ' } })
    applyEvent(reply, { event: 'delta', data: { text: '1874 [1].' } })
    applyEvent(reply, { event: 'citations', data: { citations: [CITATION] } })
    applyEvent(reply, { event: 'usage', data: { prompt_tokens: 3 } })
    applyEvent(reply, { event: 'done', data: { model: 'default', request_id: 'r1' } })
    expect(reply.content).toBe('Built in 1874 [1].')
    expect(reply.sources).toHaveLength(1)
    expect(reply.citations[0]?.document_id).toBe('lighthouse.md')
    expect(reply.model).toBe('default')
    expect(reply.requestId).toBe('r1')
    expect(reply.chunks).toBe(2)
    expect(reply.fallbackReason).toBe('')
  })

  it('replaces the streamed text when the model\'s citations did not check out', () => {
    const reply = newReply()
    applyEvent(reply, { event: 'delta', data: { text: 'It was built in 1999 [7].' } })
    applyEvent(reply, { event: 'replace', data: { text: 'Built in 1874 [1].' } })
    applyEvent(reply, { event: 'done', data: { model: 'default', fallback_reason: 'invalid_citations' } })
    expect(reply.content).toBe('Built in 1874 [1].')
    expect(reply.fallbackReason).toBe('invalid_citations')
  })
})

describe('chat store', () => {
  it('starts a grounded conversation, streams the reply and lists the conversation', async () => {
    server.on('POST /v1/conversations/c1/messages', async (request, response) => {
      expect(JSON.parse(request.body)).toEqual({ content: 'When was it built?' })
      await sse(
        response,
        [
          ['sources', { sources: [CITATION] }],
          ['delta', { text: 'It was built ' }],
          ['delta', { text: 'in 1874 [1].' }],
          ['citations', { citations: [CITATION] }],
          ['done', { model: 'default', finish_reason: 'stop', request_id: 'req-42' }],
        ],
        { requestId: 'req-42' },
      )
    })
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.start({ model: 'default', collection: 'e2e', title: '' })
    await chat.send('When was it built?')
    expect(chat.messages.map((m) => m.role)).toEqual(['user', 'assistant'])
    const reply = chat.messages[1]
    expect(reply?.content).toBe('It was built in 1874 [1].')
    expect(reply?.status).toBe('done')
    expect(reply?.requestId).toBe('req-42')
    expect(reply?.citations[0]?.chunk_id).toBe('lighthouse.md#0')
    expect(chat.streaming).toBe(false)
    expect(chat.conversations[0]).toMatchObject({ id: 'c1', title: 'When was it built?', collection: 'e2e' })
  })

  it('stop() aborts the stream and keeps what arrived', async () => {
    server.on('POST /v1/conversations/c1/messages', async (_request, response) => {
      await sse(response, [['delta', { text: 'partial ' }]], { holdOpen: true })
    })
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.start({ model: 'default', collection: null, title: 'x' })
    const sending = chat.send('hello')
    await expect.poll(() => chat.messages[1]?.content).toBe('partial ')
    expect(chat.streaming).toBe(true)
    chat.stop()
    await sending
    expect(chat.messages[1]?.status).toBe('stopped')
    expect(chat.streaming).toBe(false)
  })

  it('shows a stream error as a readable message', async () => {
    server.on('POST /v1/conversations/c1/messages', (_request, response) => {
      problem(response, 429, 'Too Many Requests', 'token budget exceeded', { 'Retry-After': '20' })
    })
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.start({ model: 'default', collection: null, title: 'x' })
    await chat.send('hello')
    expect(chat.messages[1]?.status).toBe('error')
    expect(chat.messages[1]?.error).toBe('Too many requests: token budget exceeded. Try again in 20 seconds.')
  })

  it('lists the conversations the server keeps for this user', async () => {
    server.on('GET /v1/conversations', (_request, response) =>
      json(response, 200, {
        data: [
          { id: 'c2', model: 'fast', collection: null, title: 'Second', created_at: 2, message_count: 0 },
          { id: 'c1', model: 'default', collection: 'e2e', title: '', created_at: 1, message_count: 4 },
        ],
      }),
    )
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.load()
    expect(chat.conversations.map((c) => [c.id, c.title, c.model, c.collection])).toEqual([
      ['c2', 'Second', 'fast', null],
      ['c1', '', 'default', 'e2e'],
    ])
    expect(server.requests.at(-1)?.path).toBe('/v1/conversations?limit=50')
  })

  it('drops a conversation the server no longer has', async () => {
    server.on('GET /v1/conversations', (_request, response) =>
      json(response, 200, { data: [{ id: 'gone', model: 'default', collection: null, title: 'old', created_at: 0, message_count: 2 }] }),
    )
    server.on('GET /v1/conversations/gone', (_request, response) => problem(response, 404, 'Not Found', 'no such conversation'))
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.load()
    expect(chat.conversations).toHaveLength(1)
    await chat.open('gone')
    expect(chat.conversations).toHaveLength(0)
    expect(chat.error).toMatch(/no longer exists/)
  })

  it('deletes a conversation on the server, and keeps it when the delete fails', async () => {
    let failing = true
    server.on('GET /v1/conversations', (_request, response) =>
      json(response, 200, { data: [{ id: 'c9', model: 'default', collection: null, title: 't', created_at: 0, message_count: 0 }] }),
    )
    server.on('DELETE /v1/conversations/c9', (_request, response) => {
      if (failing) problem(response, 503, 'Service Unavailable', 'llm-router unavailable')
      else {
        response.writeHead(204)
        response.end()
      }
    })
    const chat = storeContext(server.url).use(() => useChatStore())
    await chat.load()
    await chat.remove('c9')
    expect(chat.conversations).toHaveLength(1)
    expect(chat.error).not.toBe('')
    failing = false
    await chat.remove('c9')
    expect(chat.conversations).toHaveLength(0)
    expect(server.requests.filter((r) => r.method === 'DELETE')).toHaveLength(2)
  })
})
