import { mount } from '@vue/test-utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Api } from '../../src/api/api'
import { ApiClient } from '../../src/api/client'
import { API_KEY } from '../../src/api/inject'
import FeedbackWidget from '../../src/components/FeedbackWidget.vue'
import { json, problem, startServer, type TestServer } from '../helpers/server'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())

function mountWidget(requestId: string) {
  const api = new Api(new ApiClient({ baseUrl: server.url }))
  return mount(FeedbackWidget, { props: { requestId }, global: { provide: { [API_KEY as symbol]: api } } })
}

/** Until the widget says how sending went. */
const settle = async (wrapper: ReturnType<typeof mountWidget>) => {
  await expect.poll(() => wrapper.get('[role="status"]').text()).not.toBe('')
}

describe('FeedbackWidget', () => {
  it('sends a thumbs up with the request id', async () => {
    server.on('POST /v1/feedback', (request, response) => {
      json(response, 201, { id: 'f1', ...JSON.parse(request.body), route: '/v1/ask', model: 'default', provider: 'local', prompt_version: '', created_at: '' })
    })
    const wrapper = mountWidget('req-1')
    await wrapper.get('button[aria-label="Good answer"]').trigger('click')
    await settle(wrapper)
    const sent = JSON.parse(server.requests.at(-1)?.body ?? '{}')
    expect(sent).toEqual({ request_id: 'req-1', rating: 1, comment: null })
    expect(wrapper.get('button[aria-label="Good answer"]').attributes('aria-pressed')).toBe('true')
    expect(wrapper.get('[role="status"]').text()).toBe('Thanks for the feedback.')
  })

  it('sends a thumbs down with a comment', async () => {
    const wrapper = mountWidget('req-2')
    await wrapper.get('button[aria-expanded]').trigger('click')
    await wrapper.get('textarea').setValue('  The date is wrong.  ')
    await wrapper.get('button[aria-label="Bad answer"]').trigger('click')
    await settle(wrapper)
    expect(JSON.parse(server.requests.at(-1)?.body ?? '{}')).toEqual({ request_id: 'req-2', rating: -1, comment: 'The date is wrong.' })
    expect(wrapper.get('[role="status"]').text()).toBe('Thanks, your rating and comment were sent.')
  })

  it('says why feedback was not sent', async () => {
    server.on('POST /v1/feedback', (_request, response) => problem(response, 404, 'Not Found', 'no answer with this request id'))
    const wrapper = mountWidget('req-3')
    await wrapper.get('button[aria-label="Bad answer"]').trigger('click')
    await settle(wrapper)
    expect(wrapper.get('[role="status"]').text()).toBe('Feedback not sent: Not Found: no answer with this request id')
  })
})
