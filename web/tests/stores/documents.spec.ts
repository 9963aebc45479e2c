import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { MAX_FILE_BYTES, rejectReason, useDocumentsStore } from '../../src/stores/documents'
import { storeContext } from '../helpers/app'
import { json, problem, startServer, type TestServer } from '../helpers/server'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())

describe('rejectReason', () => {
  it('accepts the types the gateway parses and refuses others, empty and oversized files', () => {
    expect(rejectReason({ name: 'notes.MD', size: 10 })).toBeNull()
    expect(rejectReason({ name: 'report.pdf', size: MAX_FILE_BYTES })).toBeNull()
    expect(rejectReason({ name: 'tool.exe', size: 10 })).toMatch(/^tool\.exe: this file type is not supported/)
    expect(rejectReason({ name: 'README', size: 10 })).toMatch(/not supported/)
    expect(rejectReason({ name: 'empty.txt', size: 0 })).toBe('empty.txt: the file is empty.')
    expect(rejectReason({ name: 'huge.txt', size: MAX_FILE_BYTES + 1 })).toMatch(/^huge\.txt: the file is 50\.0 MB, more than/)
  })
})

describe('documents store', () => {
  it('uploads each file, follows its job to the end and refreshes the list', async () => {
    let polls = 0
    let stored = false
    server.on('GET /v1/collections', (_request, response) =>
      json(response, 200, { collections: [{ name: 'docs', chunking: { chunk_size: 200, chunk_overlap: 32, markdown: false }, index_type: 'FLAT', full_text: true, dimension: 384 }] }),
    )
    server.on('POST /v1/collections/docs/files', (request, response) => {
      if (request.body.includes('filename="bad.pdf"')) {
        problem(response, 422, 'Unprocessable Content', "'bad.pdf' is not a readable PDF")
        return
      }
      json(response, 202, { job_id: 'a'.repeat(32), status_url: '/v1/jobs/x', documents: [{ id: 'good.txt', source: 'good.txt' }] })
    })
    server.on(`GET /v1/jobs/${'a'.repeat(32)}`, (_request, response) => {
      polls++
      stored = polls >= 3
      json(response, 200, {
        id: 'a'.repeat(32),
        collection: 'docs',
        state: stored ? 'succeeded' : 'running',
        progress: { documents_done: stored ? 1 : 0, documents_total: 1, chunks_embedded: stored ? 2 : 1, chunks_total: 2 },
        errors: [],
        created_at: '2026-11-25T00:00:00Z',
        updated_at: '2026-11-25T00:00:01Z',
      })
    })
    server.on('GET /v1/collections/docs/documents', (_request, response) =>
      json(response, 200, { documents: stored ? [{ id: 'good.txt', chunks: 2, metadata: {} }] : [] }),
    )
    const docs = storeContext(server.url).use(() => useDocumentsStore())
    docs.setPollInterval(10)
    await docs.loadCollections()
    expect(docs.selected).toBe('docs')
    await docs.addFiles([
      new File(['Paris is the capital of France.'], 'good.txt'),
      new File(['%PDF-broken'], 'bad.pdf'),
      new File(['MZ'], 'tool.exe'),
    ])
    const byName = Object.fromEntries(docs.uploads.map((u) => [u.name, u]))
    expect(byName['good.txt']).toMatchObject({ state: 'succeeded', progress: 1, message: 'Stored: 1 document(s), 2 chunk(s).' })
    expect(byName['bad.pdf']).toMatchObject({ state: 'rejected', message: "Not accepted: 'bad.pdf' is not a readable PDF." })
    expect(byName['tool.exe']?.state).toBe('rejected')
    expect(polls).toBe(3)
    expect(docs.documents.map((d) => d.id)).toEqual(['good.txt'])
    // tool.exe never reached the server.
    expect(server.requests.filter((r) => r.path.endsWith('/files'))).toHaveLength(2)
  })

  it('reports a failed job with its errors', async () => {
    server.on('POST /v1/collections/docs/files', (_request, response) =>
      json(response, 202, { job_id: 'b'.repeat(32), status_url: '', documents: [] }),
    )
    server.on(`GET /v1/jobs/${'b'.repeat(32)}`, (_request, response) =>
      json(response, 200, {
        id: 'b'.repeat(32),
        collection: 'docs',
        state: 'failed',
        progress: { documents_done: 0, documents_total: 1, chunks_embedded: 0, chunks_total: 1 },
        errors: ['embedding service unavailable'],
        created_at: '',
        updated_at: '',
      }),
    )
    const docs = storeContext(server.url).use(() => useDocumentsStore())
    docs.selected = 'docs'
    await docs.addFiles([new File(['text'], 'a.txt')])
    expect(docs.uploads[0]).toMatchObject({ state: 'failed', message: 'embedding service unavailable' })
  })

  it('deletes a document', async () => {
    server.on('DELETE /v1/collections/docs/documents/a%2Fb%23c.txt', (_request, response) => json(response, 200, { deleted_chunks: 2 }))
    const docs = storeContext(server.url).use(() => useDocumentsStore())
    docs.selected = 'docs'
    docs.documents = [{ id: 'a/b#c.txt', chunks: 2, metadata: {} }]
    await docs.deleteDocument('a/b#c.txt')
    expect(docs.error).toBe('')
    expect(docs.documents).toEqual([])
  })
})
