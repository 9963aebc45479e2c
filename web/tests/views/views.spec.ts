import { flushPromises, mount } from '@vue/test-utils'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { API_KEY } from '../../src/api/inject'
import DocumentsView from '../../src/views/DocumentsView.vue'
import SearchView from '../../src/views/SearchView.vue'
import SummarizeView from '../../src/views/SummarizeView.vue'
import { storeContext } from '../helpers/app'
import { json, problem, sse, startServer, type TestServer } from '../helpers/server'

let server: TestServer

const COLLECTION = { name: 'docs', chunking: { chunk_size: 200, chunk_overlap: 32, markdown: false }, index_type: 'FLAT', full_text: true, dimension: 384 }

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())
beforeEach(() => {
  server.on('GET /v1/collections', (_request, response) => json(response, 200, { collections: [COLLECTION] }))
  server.on('GET /v1/collections/docs/documents', (_request, response) =>
    json(response, 200, { documents: [{ id: 'lighthouse.md', chunks: 2, metadata: { source: 'lighthouse.md' } }] }),
  )
})

function mountView(component: object) {
  const ctx = storeContext(server.url)
  const wrapper = mount(component, { global: { plugins: [], provide: { [API_KEY as symbol]: ctx.api } } })
  return { ctx, wrapper }
}

describe('DocumentsView', () => {
  it('takes dropped files and says clearly which ones are refused', async () => {
    const { wrapper } = mountView(DocumentsView)
    await expect.poll(() => wrapper.get('[data-testid="documents"]').text()).toContain('lighthouse.md')
    const files = [new File([''], 'empty.txt'), new File(['x'], 'movie.mp4')]
    await wrapper.get('[data-testid="dropzone"]').trigger('drop', { dataTransfer: { files } })
    await flushPromises()
    const items = wrapper.findAll('[data-testid="uploads"] li')
    expect(items.map((li) => li.attributes('data-state'))).toEqual(['rejected', 'rejected'])
    expect(wrapper.get('[data-testid="uploads"]').text()).toContain('empty.txt: the file is empty.')
    expect(wrapper.get('[data-testid="uploads"]').text()).toContain('movie.mp4: this file type is not supported')
    // Refused before upload: nothing was sent.
    expect(server.requests.some((r) => r.path.endsWith('/files'))).toBe(false)
  })
})

describe('SearchView', () => {
  it('sends mode, top_k and filters, and shows scores with the query words marked', async () => {
    server.on('POST /v1/collections/docs/search', (request, response) => {
      const body = JSON.parse(request.body) as Record<string, unknown>
      expect(body).toEqual({ query: 'lighthouse built', top_k: 3, mode: 'hybrid', filter: { type: 'md', year: 1874 } })
      json(response, 200, {
        results: [{ document_id: 'lighthouse.md', chunk_id: 'lighthouse.md#0', chunk_index: 0, text: 'The Lighthouse was built in 1874.', score: 0.8123, metadata: {} }],
      })
    })
    const { wrapper } = mountView(SearchView)
    await expect.poll(() => wrapper.findAll('#search-collection option').length).toBe(1)
    await wrapper.get('#search-query').setValue('lighthouse built')
    await wrapper.get('input[value="hybrid"]').setValue(true)
    await wrapper.get('#search-topk').setValue(3)
    const add = wrapper.findAll('button').find((b) => b.text() === 'Add filter')
    await add?.trigger('click')
    await add?.trigger('click')
    await wrapper.get('#filter-key-0').setValue('type')
    await wrapper.get('#filter-value-0').setValue('md')
    await wrapper.get('#filter-key-1').setValue('year')
    await wrapper.get('#filter-value-1').setValue('1874')
    await wrapper.get('form').trigger('submit')
    await expect.poll(() => wrapper.find('[data-testid="results"]').exists()).toBe(true)
    const results = wrapper.get('[data-testid="results"]')
    expect(results.text()).toContain('score 0.812')
    expect(results.findAll('mark').map((m) => m.text())).toEqual(['Lighthouse', 'built'])
  })

  it('shows the problem of a failed search', async () => {
    server.on('POST /v1/collections/docs/search', (_request, response) =>
      problem(response, 409, 'Conflict', 'hybrid search needs Milvus >= 2.5'),
    )
    const { wrapper } = mountView(SearchView)
    await expect.poll(() => wrapper.findAll('#search-collection option').length).toBe(1)
    await wrapper.get('#search-query').setValue('x')
    await wrapper.get('form').trigger('submit')
    await expect.poll(() => wrapper.find('[role="alert"]').exists()).toBe(true)
    expect(wrapper.get('[role="alert"]').text()).toBe('Conflict: hybrid search needs Milvus >= 2.5')
  })
})

describe('SummarizeView', () => {
  it('streams the summary of pasted text and then offers feedback', async () => {
    server.on('POST /v1/summarize', async (request, response) => {
      expect(JSON.parse(request.body)).toEqual({ text: 'Long text. More text.', style: 'bullets', max_words: 20, stream: true })
      await sse(response, [
        ['delta', { text: '- Long text.' }],
        ['usage', { prompt_tokens: 5, completion_tokens: 3 }],
        ['done', { model: 'default', finish_reason: 'stop', request_id: 'sum-1' }],
      ])
    })
    const { wrapper } = mountView(SummarizeView)
    await wrapper.get('#summary-text').setValue('Long text. More text.')
    await wrapper.get('input[value="bullets"]').setValue(true)
    await wrapper.get('#summary-words').setValue(20)
    await wrapper.get('form').trigger('submit')
    await expect.poll(() => wrapper.find('button[aria-label="Good answer"]').exists()).toBe(true)
    expect(wrapper.get('[data-testid="summary"]').text()).toBe('- Long text.')
  })
})
