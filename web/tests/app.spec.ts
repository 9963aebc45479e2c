import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createMemoryHistory } from 'vue-router'

import { createAimeshApp } from '../src/app'
import { fakeJwt, json, problem, startServer, type TestServer } from './helpers/server'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())
beforeEach(() => {
  sessionStorage.clear()
  localStorage.clear()
  document.body.innerHTML = ''
})

const settle = () => new Promise((resolve) => setTimeout(resolve, 80))

function tokens(roles: string[]) {
  server.on('POST /v1/auth/token', (request, response) => {
    const form = new URLSearchParams(request.body)
    if (form.get('grant_type') !== 'password') {
      json(response, 400, { error: 'invalid_grant', error_description: 'refresh token invalid, used or expired' })
      return
    }
    json(response, 200, { access_token: fakeJwt({ sub: 'user:7', roles }), token_type: 'bearer', expires_in: 900, refresh_token: 'r' })
  })
}

async function mountApp() {
  const root = document.createElement('div')
  document.body.appendChild(root)
  const built = createAimeshApp({ baseUrl: server.url, history: createMemoryHistory() })
  await built.router.push('/documents')
  await built.router.isReady()
  built.app.mount(root)
  await settle()
  return { ...built, root }
}

async function signIn(root: HTMLElement, username: string, password: string) {
  const set = (selector: string, value: string) => {
    const input = root.querySelector<HTMLInputElement>(selector)
    if (!input) throw new Error(`no ${selector}`)
    input.value = value
    input.dispatchEvent(new Event('input'))
  }
  set('#username', username)
  set('#password', password)
  root.querySelector('form')?.dispatchEvent(new Event('submit'))
  // Until the form is done: the button says "Sign in" again, or the page changed.
  await expect.poll(() => root.querySelector('button[type="submit"]')?.textContent ?? 'gone').not.toBe('Signing in…')
  await settle()
}

describe('the app', () => {
  it('sends a signed-out visitor to sign in, then on to the page asked for', async () => {
    tokens(['editor'])
    server.on('GET /v1/collections', (_request, response) => json(response, 200, { collections: [] }))
    const { router, root } = await mountApp()
    expect(router.currentRoute.value.name).toBe('signin')
    expect(router.currentRoute.value.query.next).toBe('/documents')
    expect(root.querySelector('h1')?.textContent).toBe('Sign in')
    await signIn(root, 'ada', 'secret-password')
    expect(router.currentRoute.value.fullPath).toBe('/documents')
    expect(root.querySelector('h1')?.textContent).toBe('Documents')
    // Not an admin: no Admin link, and /admin leads back to chat.
    expect(root.querySelector('nav')?.textContent).not.toContain('Admin')
    await router.push('/admin')
    expect(router.currentRoute.value.name).toBe('chat')
  })

  it('goes back to sign in with a readable notice when the gateway answers 401', async () => {
    tokens(['admin'])
    server.on('GET /v1/collections', (_request, response) => problem(response, 401, 'Unauthorized', 'the token was revoked'))
    const { router, root } = await mountApp()
    await signIn(root, 'ada', 'secret-password')
    await expect.poll(() => router.currentRoute.value.name).toBe('signin')
    expect(router.currentRoute.value.query.next).toBe('/documents')
    expect(root.querySelector('[role="alert"]')?.textContent).toBe(
      'You are not signed in or your session expired: the token was revoked. Please sign in again.',
    )
    expect(sessionStorage.getItem('aimesh.auth')).toBeNull()
  })

  it('shows a sign-in failure next to the form', async () => {
    server.on('POST /v1/auth/token', (_request, response) =>
      json(response, 400, { error: 'invalid_grant', error_description: 'wrong username or password' }),
    )
    const { router, root } = await mountApp()
    await signIn(root, 'ada', 'wrong')
    expect(router.currentRoute.value.name).toBe('signin')
    expect(root.querySelector('[role="alert"]')?.textContent).toBe('invalid_grant: wrong username or password')
  })
})
