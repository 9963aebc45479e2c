import { inject, type InjectionKey } from 'vue'

import type { Api } from './api'

export const API_KEY: InjectionKey<Api> = Symbol('aimesh api')

/** The app's Api (provided by createAimeshApp); works in components and setup stores. */
export function useApi(): Api {
  const api = inject(API_KEY)
  if (api === undefined) throw new Error('the Api is not provided: build the app with createAimeshApp')
  return api
}
