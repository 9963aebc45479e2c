/**
 * Who is signed in: a local user with an OAuth2 access token (refreshed before it expires
 * and on a 401), or a service user with an API key. Kept in sessionStorage so a reload keeps
 * the session but closing the tab ends it; nothing is written to localStorage.
 */

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'

import type { TokenResponse } from '../api/api'
import { ApiError } from '../api/errors'
import { useApi } from '../api/inject'

export const STORAGE_KEY = 'aimesh.auth'
/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_SECONDS = 30

export type AuthMode = 'none' | 'token' | 'apikey'

export interface Claims {
  sub?: string
  exp?: number
  roles?: string[]
  tenant_id?: string
  [claim: string]: unknown
}

interface Saved {
  mode: AuthMode
  username: string
  accessToken: string
  refreshToken: string
  expiresAt: number
  apiKey: string
  roles: string[]
}

/** The payload of a JWT (not verified: the gateway verifies; the app only reads roles). */
export function decodeJwt(token: string): Claims {
  const part = token.split('.')[1]
  if (!part) return {}
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes))
    return claims && typeof claims === 'object' ? (claims as Claims) : {}
  } catch {
    return {}
  }
}

export const useAuthStore = defineStore('auth', () => {
  const api = useApi()
  const mode = ref<AuthMode>('none')
  const username = ref('')
  const accessToken = ref('')
  const refreshToken = ref('')
  const expiresAt = ref(0)
  const apiKey = ref('')
  const roles = ref<string[]>([])
  /** Why the user was signed out (shown on the sign-in screen). */
  const notice = ref('')
  let timer: ReturnType<typeof setTimeout> | undefined
  let refreshing: Promise<boolean> | null = null

  const signedIn = computed(() => mode.value !== 'none')
  const isAdmin = computed(() => roles.value.includes('admin'))
  const canEdit = computed(() => roles.value.includes('admin') || roles.value.includes('editor'))
  const subject = computed(() => {
    if (mode.value === 'token') return decodeJwt(accessToken.value).sub ?? username.value
    if (mode.value === 'apikey') return `key:${apiKey.value.split('_').slice(0, 2).join('_')}`
    return ''
  })
  const authorization = computed(() => {
    if (mode.value === 'token' && accessToken.value) return `Bearer ${accessToken.value}`
    if (mode.value === 'apikey' && apiKey.value) return `Bearer ${apiKey.value}`
    return null
  })

  function save(): void {
    if (mode.value === 'none') {
      sessionStorage.removeItem(STORAGE_KEY)
      return
    }
    const saved: Saved = {
      mode: mode.value,
      username: username.value,
      accessToken: accessToken.value,
      refreshToken: refreshToken.value,
      expiresAt: expiresAt.value,
      apiKey: apiKey.value,
      roles: roles.value,
    }
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved))
  }

  function schedule(): void {
    clearTimeout(timer)
    if (mode.value !== 'token' || !refreshToken.value) return
    const delay = Math.max(0, expiresAt.value - Date.now() - REFRESH_MARGIN_SECONDS * 1000)
    timer = setTimeout(() => void refresh(), delay)
  }

  function takeTokens(tokens: TokenResponse): void {
    accessToken.value = tokens.access_token
    refreshToken.value = tokens.refresh_token
    expiresAt.value = Date.now() + tokens.expires_in * 1000
    const claims = decodeJwt(tokens.access_token)
    roles.value = Array.isArray(claims.roles) ? claims.roles.map(String) : []
    mode.value = 'token'
    save()
    schedule()
  }

  function restore(): void {
    const text = sessionStorage.getItem(STORAGE_KEY)
    if (!text) return
    try {
      const saved = JSON.parse(text) as Saved
      mode.value = saved.mode
      username.value = saved.username
      accessToken.value = saved.accessToken
      refreshToken.value = saved.refreshToken
      expiresAt.value = saved.expiresAt
      apiKey.value = saved.apiKey
      roles.value = saved.roles
      schedule()
    } catch {
      sessionStorage.removeItem(STORAGE_KEY)
    }
  }

  async function signIn(name: string, password: string): Promise<void> {
    const reply = await api.passwordToken(name, password)
    username.value = name
    apiKey.value = ''
    notice.value = ''
    takeTokens(reply.data)
  }

  /** Sign in with an API key: checked with a read, and an admin read tells the role. */
  async function signInWithKey(key: string): Promise<void> {
    mode.value = 'apikey'
    apiKey.value = key.trim()
    username.value = 'API key'
    accessToken.value = ''
    refreshToken.value = ''
    roles.value = []
    try {
      await api.collections()
      roles.value = ['user']
      try {
        await api.keys()
        roles.value = ['admin']
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 403) throw error
      }
    } catch (error) {
      clear()
      throw error
    }
    notice.value = ''
    save()
  }

  /** One refresh at a time; false (signed-out state kept as is) when it is not possible. */
  function refresh(): Promise<boolean> {
    if (mode.value !== 'token' || !refreshToken.value) return Promise.resolve(false)
    if (refreshing) return refreshing
    refreshing = (async () => {
      try {
        takeTokens((await api.refreshToken(refreshToken.value)).data)
        return true
      } catch {
        return false
      } finally {
        refreshing = null
      }
    })()
    return refreshing
  }

  function clear(): void {
    clearTimeout(timer)
    mode.value = 'none'
    username.value = ''
    accessToken.value = ''
    refreshToken.value = ''
    expiresAt.value = 0
    apiKey.value = ''
    roles.value = []
    save()
  }

  function signOut(reason = ''): void {
    clear()
    notice.value = reason
  }

  return {
    mode,
    username,
    roles,
    notice,
    expiresAt,
    signedIn,
    isAdmin,
    canEdit,
    subject,
    authorization,
    restore,
    signIn,
    signInWithKey,
    refresh,
    signOut,
  }
})
