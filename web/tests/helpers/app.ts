/** A Pinia + Api context for store tests, talking to a test server. */

import { createPinia, setActivePinia } from 'pinia'
import { createApp, type App } from 'vue'

import { Api } from '../../src/api/api'
import { ApiClient } from '../../src/api/client'
import { API_KEY } from '../../src/api/inject'
import { useAuthStore } from '../../src/stores/auth'

export interface StoreContext {
  app: App
  api: Api
  client: ApiClient
  /** Run a store factory inside the app (setup stores inject the Api). */
  use<T>(factory: () => T): T
}

export function storeContext(baseUrl: string): StoreContext {
  const app = createApp({ render: () => null })
  const client = new ApiClient({ baseUrl })
  const api = new Api(client)
  app.provide(API_KEY, api)
  const pinia = createPinia()
  app.use(pinia)
  setActivePinia(pinia)
  const context: StoreContext = { app, api, client, use: (factory) => app.runWithContext(factory) }
  const auth = context.use(() => useAuthStore())
  client.auth = {
    authorization: () => auth.authorization,
    refresh: () => auth.refresh(),
    unauthorized: (error) => auth.signOut(error.message),
  }
  return context
}
