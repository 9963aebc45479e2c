/**
 * The HTTP client of the web app: JSON requests, typed SSE streams and uploads with
 * progress, all against the same origin (the gateway serves the app at `/`).
 *
 * Every failure becomes an {@link ApiError} with a readable message. A 401 is answered
 * by one token refresh and a retry; when that fails the auth provider is told (it signs
 * out and the router goes back to the sign-in screen).
 */

import { ApiError, parseRetryAfter, type ProblemBody } from './errors'
import { SseParser } from './sse'

export interface AuthProvider {
  /** The Authorization header value, or null when signed out. */
  authorization(): string | null
  /** Get a new access token (refresh grant); true when there is one to retry with. */
  refresh(): Promise<boolean>
  /** The credential is not accepted: sign out and ask for a new one. */
  unauthorized(error: ApiError): void
}

export interface RequestOptions {
  json?: unknown
  form?: Record<string, string>
  query?: Record<string, string | number | boolean | undefined>
  signal?: AbortSignal
  /** Send without credentials (the token endpoint). */
  anonymous?: boolean
}

export interface ApiResponse<T> {
  data: T
  requestId: string | null
  status: number
}

/** One event of a typed stream, its `data:` parsed as JSON. */
export interface StreamEvent {
  event: string
  data: Record<string, unknown>
}

export interface UploadProgress {
  loaded: number
  total: number
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>
export type XhrFactory = () => XMLHttpRequest

export async function problemFrom(response: Response): Promise<ApiError> {
  let body: ProblemBody | null = null
  const text = await response.text().catch(() => '')
  if (text) {
    try {
      const parsed: unknown = JSON.parse(text)
      if (parsed && typeof parsed === 'object') body = parsed as ProblemBody
    } catch {
      body = { detail: text.slice(0, 300) }
    }
  }
  return new ApiError(response.status, body, {
    retryAfterSeconds: parseRetryAfter(response.headers.get('Retry-After')),
    requestId: response.headers.get('X-Request-ID'),
  })
}

function networkError(error: unknown): ApiError {
  const detail = error instanceof Error ? error.message : String(error)
  return new ApiError(0, { title: 'Network error', detail })
}

export class ApiClient {
  private readonly baseUrl: string
  private readonly fetchImpl: FetchLike
  private readonly xhrFactory: XhrFactory
  auth: AuthProvider | null = null

  constructor(
    options: { baseUrl?: string; fetch?: FetchLike; xhr?: XhrFactory; auth?: AuthProvider } = {},
  ) {
    this.baseUrl = options.baseUrl ?? ''
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
    this.xhrFactory = options.xhr ?? (() => new XMLHttpRequest())
    this.auth = options.auth ?? null
  }

  url(path: string, query?: RequestOptions['query']): string {
    let url = this.baseUrl + path
    if (query) {
      const params = new URLSearchParams()
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined) params.set(key, String(value))
      }
      const text = params.toString()
      if (text) url += `?${text}`
    }
    return url
  }

  private headers(options: RequestOptions, accept: string): Headers {
    const headers = new Headers({ Accept: accept })
    if (!options.anonymous) {
      const authorization = this.auth?.authorization()
      if (authorization) headers.set('Authorization', authorization)
    }
    if (options.json !== undefined) headers.set('Content-Type', 'application/json')
    if (options.form !== undefined) headers.set('Content-Type', 'application/x-www-form-urlencoded')
    return headers
  }

  /** Send once, refresh and resend once on 401; the response is ok or an ApiError is thrown. */
  private async send(
    method: string,
    path: string,
    options: RequestOptions,
    accept: string,
  ): Promise<Response> {
    const attempt = async (): Promise<Response> => {
      try {
        return await this.fetchImpl(this.url(path, options.query), {
          method,
          headers: this.headers(options, accept),
          body:
            options.json !== undefined
              ? JSON.stringify(options.json)
              : options.form !== undefined
                ? new URLSearchParams(options.form).toString()
                : undefined,
          signal: options.signal,
        })
      } catch (error) {
        if (error instanceof DOMException && error.name === 'AbortError') throw error
        throw networkError(error)
      }
    }
    let response = await attempt()
    if (response.status === 401 && !options.anonymous && this.auth) {
      if (await this.auth.refresh()) response = await attempt()
    }
    if (!response.ok) {
      const error = await problemFrom(response)
      if (error.status === 401 && !options.anonymous) this.auth?.unauthorized(error)
      throw error
    }
    return response
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const response = await this.send(method, path, options, 'application/json')
    const text = response.status === 204 ? '' : await response.text()
    return {
      data: (text ? JSON.parse(text) : null) as T,
      requestId: response.headers.get('X-Request-ID'),
      status: response.status,
    }
  }

  /**
   * POST `json` to a streaming route and call `onEvent` for each typed event as it arrives.
   * An `error` event is thrown as an ApiError; aborting `signal` stops reading (AbortError).
   * Resolves with the request id of the answer (header, or the `done` event's).
   */
  async stream(
    path: string,
    json: unknown,
    onEvent: (event: StreamEvent) => void,
    signal?: AbortSignal,
  ): Promise<{ requestId: string | null }> {
    const response = await this.send('POST', path, { json, signal }, 'text/event-stream')
    let requestId = response.headers.get('X-Request-ID')
    if (response.body === null) return { requestId }
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    const parser = new SseParser()
    const handle = (frames: ReturnType<SseParser['push']>): void => {
      for (const frame of frames) {
        let data: Record<string, unknown> = {}
        try {
          const parsed: unknown = JSON.parse(frame.data)
          if (parsed && typeof parsed === 'object') data = parsed as Record<string, unknown>
        } catch {
          data = { text: frame.data }
        }
        if (frame.event === 'error') {
          throw new ApiError(typeof data.status === 'number' ? data.status : 502, {
            detail: typeof data.detail === 'string' ? data.detail : 'the stream failed',
          }, { requestId })
        }
        if (frame.event === 'done' && typeof data.request_id === 'string') requestId = data.request_id
        onEvent({ event: frame.event, data })
      }
    }
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        handle(parser.push(decoder.decode(value, { stream: true })))
      }
      handle(parser.push(decoder.decode()))
      handle(parser.end())
    } catch (error) {
      await reader.cancel().catch(() => undefined)
      throw error
    }
    return { requestId }
  }

  /**
   * Upload files as multipart/form-data (field `files`) with XMLHttpRequest, whose upload
   * progress events fetch does not offer. One refresh-and-retry on 401, like {@link send}.
   */
  async upload<T>(
    path: string,
    files: File[],
    onProgress: (progress: UploadProgress) => void,
    signal?: AbortSignal,
  ): Promise<ApiResponse<T>> {
    const attempt = (): Promise<XMLHttpRequest> =>
      new Promise((resolve, reject) => {
        const xhr = this.xhrFactory()
        xhr.open('POST', this.url(path))
        xhr.setRequestHeader('Accept', 'application/json')
        const authorization = this.auth?.authorization()
        if (authorization) xhr.setRequestHeader('Authorization', authorization)
        xhr.upload.onprogress = (event: ProgressEvent) => {
          onProgress({ loaded: event.loaded, total: event.lengthComputable ? event.total : 0 })
        }
        xhr.onload = () => resolve(xhr)
        xhr.onerror = () => reject(networkError(new Error('the upload failed')))
        xhr.onabort = () => reject(new DOMException('the upload was cancelled', 'AbortError'))
        signal?.addEventListener('abort', () => xhr.abort(), { once: true })
        const form = new FormData()
        for (const file of files) form.append('files', file, file.name)
        xhr.send(form)
      })
    let xhr = await attempt()
    if (xhr.status === 401 && this.auth && (await this.auth.refresh())) xhr = await attempt()
    const requestId = xhr.getResponseHeader('X-Request-ID')
    if (xhr.status < 200 || xhr.status >= 300) {
      let body: ProblemBody | null = null
      try {
        body = JSON.parse(xhr.responseText) as ProblemBody
      } catch {
        body = xhr.responseText ? { detail: xhr.responseText.slice(0, 300) } : null
      }
      const error = new ApiError(xhr.status, body, {
        retryAfterSeconds: parseRetryAfter(xhr.getResponseHeader('Retry-After')),
        requestId,
      })
      if (error.status === 401) this.auth?.unauthorized(error)
      throw error
    }
    return { data: JSON.parse(xhr.responseText) as T, requestId, status: xhr.status }
  }
}
