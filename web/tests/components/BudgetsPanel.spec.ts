import { flushPromises, mount } from '@vue/test-utils'
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'

import { API_KEY } from '../../src/api/inject'
import BudgetsPanel from '../../src/components/BudgetsPanel.vue'
import { storeContext } from '../helpers/app'
import { json, problem, startServer, type TestServer } from '../helpers/server'

let server: TestServer
let stored: Record<string, unknown>[] = []

function budget(id: string, fields: Record<string, unknown>): Record<string, unknown> {
  return {
    id,
    tenant_id: 'acme',
    name: '',
    scope: 'tenant',
    subject: '',
    model: '',
    limit_usd: 10,
    window: 'month',
    rolling_seconds: 0,
    mode: 'hard',
    created_at: '2026-12-01T00:00:00Z',
    updated_at: '2026-12-01T00:00:00Z',
    spend: {
      spent_usd: 9,
      reserved_usd: 0.5,
      forecast_usd: 40,
      percent: 90,
      window_start: '2026-12-01T00:00:00Z',
      window_end: '2027-01-01T00:00:00Z',
    },
    ...fields,
  }
}

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())
beforeEach(() => {
  server.requests.length = 0
  stored = [budget('b1', {})]
  server.on('GET /v1/admin/budgets', (_request, response) => json(response, 200, { budgets: stored }))
  server.on('POST /v1/admin/budgets', (request, response) => {
    const body = JSON.parse(request.body) as Record<string, unknown>
    const created = budget('b2', { ...body, spend: null })
    stored.push(created)
    json(response, 201, created)
  })
  server.on('DELETE /v1/admin/budgets/b1', (_request, response) => {
    stored = stored.filter((b) => b.id !== 'b1')
    response.writeHead(204, { 'Access-Control-Allow-Origin': '*' })
    response.end()
  })
})

function mountPanel() {
  const ctx = storeContext(server.url)
  return mount(BudgetsPanel, { global: { provide: { [API_KEY as symbol]: ctx.api } } })
}

describe('BudgetsPanel', () => {
  it('shows spend against the limit, what is in flight and the forecast over it', async () => {
    const wrapper = mountPanel()
    await expect.poll(() => wrapper.find('[data-testid="budgets"]').exists()).toBe(true)
    const row = wrapper.get('[data-testid="budgets"] tbody tr')
    expect(row.attributes('data-level')).toBe('high')
    expect(row.text()).toContain('per month (UTC)')
    expect(row.text()).toContain('$9.00 (90 %)')
    expect(row.text()).toContain('$0.5000')
    expect(row.get('td.error').text()).toBe('$40.00')
  })

  it('creates a rolling user budget with the fields the API takes', async () => {
    const wrapper = mountPanel()
    await flushPromises()
    await wrapper.get('#budget-scope').setValue('user')
    await wrapper.get('#budget-subject').setValue('alice')
    await wrapper.get('#budget-limit').setValue('2.5')
    await wrapper.get('#budget-window').setValue('rolling')
    await wrapper.get('#budget-hours').setValue('6')
    await wrapper.get('#budget-mode').setValue('soft')
    await wrapper.get('[data-testid="budget-form"]').trigger('submit')
    await expect.poll(() => server.requests.some((r) => r.method === 'POST')).toBe(true)
    const sent = server.requests.filter((r) => r.method === 'POST').pop()
    expect(JSON.parse(sent?.body ?? '{}')).toEqual({
      scope: 'user',
      subject: 'alice',
      model: '',
      limit_usd: 2.5,
      window: 'rolling',
      rolling_seconds: 21600,
      mode: 'soft',
    })
    await expect.poll(() => wrapper.findAll('[data-testid="budgets"] tbody tr').length).toBe(2)
  })

  it('deletes after confirmation and says why a change failed', async () => {
    vi.stubGlobal('confirm', () => true)
    const wrapper = mountPanel()
    await expect.poll(() => wrapper.find('[data-testid="budgets"]').exists()).toBe(true)
    await wrapper.get('button.danger').trigger('click')
    await expect.poll(() => wrapper.text()).toContain('No budgets')
    server.on('POST /v1/admin/budgets', (_request, response) =>
      problem(response, 422, 'Unprocessable Content', 'request validation failed: body.subject: required'),
    )
    await wrapper.get('#budget-limit').setValue('1')
    await wrapper.get('[data-testid="budget-form"]').trigger('submit')
    await expect.poll(() => wrapper.find('[role="alert"]').exists()).toBe(true)
    expect(wrapper.get('[role="alert"]').text()).toContain('subject')
    vi.unstubAllGlobals()
  })
})
