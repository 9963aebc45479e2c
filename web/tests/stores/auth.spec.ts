import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { decodeJwt, STORAGE_KEY, useAuthStore } from '../../src/stores/auth'
import { storeContext } from '../helpers/app'
import { fakeJwt, json, problem, startServer, type TestServer } from '../helpers/server'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})
afterAll(() => server.close())
beforeEach(() => {
  sessionStorage.clear()
  server.requests.length = 0
})

function tokenRoute(): void {
  server.on('POST /v1/auth/token', (request, response) => {
    const form = new URLSearchParams(request.body)
    if (form.get('grant_type') === 'password' && form.get('password') === 'right-password') {
      json(response, 200, {
        access_token: fakeJwt({ sub: 'user:1', roles: ['editor'], tenant_id: 'acme' }),
        token_type: 'bearer',
        expires_in: 900,
        refresh_token: 'refresh-1',
      })
    } else if (form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === 'refresh-1') {
      json(response, 200, {
        access_token: fakeJwt({ sub: 'user:1', roles: ['editor'], n: 2 }),
        token_type: 'bearer',
        expires_in: 900,
        refresh_token: 'refresh-2',
      })
    } else {
      json(response, 400, { error: 'invalid_grant', error_description: 'wrong username or password' })
    }
  })
}

describe('decodeJwt', () => {
  it('reads the claims of a token and tolerates garbage', () => {
    expect(decodeJwt(fakeJwt({ sub: 'x', roles: ['admin'] }))).toEqual({ sub: 'x', roles: ['admin'] })
    expect(decodeJwt('not-a-token')).toEqual({})
    expect(decodeJwt('a.%%%.c')).toEqual({})
  })
})

describe('auth store', () => {
  it('signs in with the password grant, reads the roles and keeps the session in sessionStorage', async () => {
    tokenRoute()
    const ctx = storeContext(server.url)
    const auth = ctx.use(() => useAuthStore())
    await auth.signIn('ada', 'right-password')
    expect(auth.signedIn).toBe(true)
    expect(auth.roles).toEqual(['editor'])
    expect(auth.canEdit).toBe(true)
    expect(auth.isAdmin).toBe(false)
    expect(auth.subject).toBe('user:1')
    expect(auth.authorization).toMatch(/^Bearer eyJ/)
    const sent = new URLSearchParams(server.requests[0]?.body)
    expect(sent.get('username')).toBe('ada')
    expect(server.requests[0]?.headers.authorization).toBeUndefined()
    expect(sessionStorage.getItem(STORAGE_KEY)).toContain('refresh-1')
    expect(localStorage.getItem(STORAGE_KEY)).toBeNull()

    // A new app in the same tab restores the session.
    const again = storeContext(server.url).use(() => useAuthStore())
    again.restore()
    expect(again.signedIn).toBe(true)
    expect(again.username).toBe('ada')
  })

  it('shows the token endpoint error on a wrong password', async () => {
    tokenRoute()
    const auth = storeContext(server.url).use(() => useAuthStore())
    await expect(auth.signIn('ada', 'nope')).rejects.toThrow('invalid_grant: wrong username or password')
    expect(auth.signedIn).toBe(false)
  })

  it('refreshes the access token with the refresh grant', async () => {
    tokenRoute()
    const auth = storeContext(server.url).use(() => useAuthStore())
    await auth.signIn('ada', 'right-password')
    const before = auth.authorization
    expect(await auth.refresh()).toBe(true)
    expect(auth.authorization).not.toBe(before)
    expect(decodeJwt((auth.authorization ?? '').slice(7)).n).toBe(2)
    // refresh-1 was used once; a second refresh with refresh-2 is refused by this server.
    expect(await auth.refresh()).toBe(false)
  })

  it('a 401 that refresh cannot fix signs out with a readable notice', async () => {
    tokenRoute()
    server.on('GET /v1/collections', (_request, response) => problem(response, 401, 'Unauthorized', 'token revoked'))
    const ctx = storeContext(server.url)
    const auth = ctx.use(() => useAuthStore())
    await auth.signIn('ada', 'right-password')
    await auth.refresh() // uses refresh-1: the next refresh fails
    await expect(ctx.api.collections()).rejects.toMatchObject({ status: 401 })
    expect(auth.signedIn).toBe(false)
    expect(auth.notice).toMatch(/sign in again/)
    expect(sessionStorage.getItem(STORAGE_KEY)).toBeNull()
  })

  it('signs in with an API key and finds out whether it is an admin key', async () => {
    server.on('GET /v1/collections', (request, response) =>
      request.headers.authorization === 'Bearer am_test_key' || request.headers.authorization === 'Bearer am_admin_key'
        ? json(response, 200, { collections: [] })
        : problem(response, 401, 'Unauthorized', 'invalid API key'),
    )
    server.on('GET /v1/admin/keys', (request, response) =>
      request.headers.authorization === 'Bearer am_admin_key'
        ? json(response, 200, { keys: [] })
        : problem(response, 403, 'Forbidden', 'this operation needs the role admin'),
    )
    const auth = storeContext(server.url).use(() => useAuthStore())
    await auth.signInWithKey(' am_test_key ')
    expect(auth.mode).toBe('apikey')
    expect(auth.isAdmin).toBe(false)
    auth.signOut()
    await auth.signInWithKey('am_admin_key')
    expect(auth.isAdmin).toBe(true)
    auth.signOut()
    await expect(auth.signInWithKey('am_wrong_key')).rejects.toMatchObject({ status: 401 })
    expect(auth.signedIn).toBe(false)
  })

  it('signs out completely', async () => {
    tokenRoute()
    const auth = storeContext(server.url).use(() => useAuthStore())
    await auth.signIn('ada', 'right-password')
    auth.signOut()
    expect(auth.signedIn).toBe(false)
    expect(auth.authorization).toBeNull()
    expect(sessionStorage.getItem(STORAGE_KEY)).toBeNull()
  })
})
