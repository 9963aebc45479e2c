/**
 * Assembles the app: one ApiClient, Pinia, the router, and the auth wiring between them
 * (the client asks the auth store for the credential; a rejected credential signs out and
 * goes back to the sign-in screen).
 */

import { createPinia } from 'pinia'
import { createApp, type App as VueApp } from 'vue'
import type { Router, RouterHistory } from 'vue-router'

import { Api } from './api/api'
import { ApiClient, type FetchLike, type XhrFactory } from './api/client'
import { API_KEY } from './api/inject'
import App from './App.vue'
import { createAppRouter } from './router'
import { useAuthStore } from './stores/auth'
import { useChatStore } from './stores/chat'

export interface AimeshApp {
  app: VueApp
  router: Router
  api: Api
}

export function createAimeshApp(
  options: { fetch?: FetchLike; xhr?: XhrFactory; history?: RouterHistory; baseUrl?: string } = {},
): AimeshApp {
  const app = createApp(App)
  const client = new ApiClient({ fetch: options.fetch, xhr: options.xhr, baseUrl: options.baseUrl })
  const api = new Api(client)
  app.provide(API_KEY, api)
  const pinia = createPinia()
  app.use(pinia)
  const router = createAppRouter(options.history)
  app.use(router)
  const auth = app.runWithContext(() => useAuthStore())
  auth.restore()
  client.auth = {
    authorization: () => auth.authorization,
    refresh: () => auth.refresh(),
    unauthorized: (error) => {
      if (!auth.signedIn) return
      app.runWithContext(() => useChatStore()).reset()
      auth.signOut(error.message)
      const next = router.currentRoute.value.fullPath
      void router.push({ name: 'signin', query: next && next !== '/signin' ? { next } : {} })
    },
  }
  return { app, router, api }
}
