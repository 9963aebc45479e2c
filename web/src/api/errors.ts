/**
 * Errors of the gateway as readable messages. The gateway answers RFC 9457
 * application/problem+json ({title, status, detail, errors?}); the OAuth2 token endpoint
 * answers RFC 6749 errors ({error, error_description}).
 */

export interface FieldError {
  field: string
  message: string
  type?: string
}

export interface ProblemBody {
  type?: string
  title?: string
  status?: number
  detail?: string | null
  request_id?: string | null
  errors?: FieldError[] | null
  error?: string
  error_description?: string
}

export class ApiError extends Error {
  readonly status: number
  readonly title: string
  readonly detail: string | null
  readonly retryAfterSeconds: number | null
  readonly requestId: string | null
  readonly fieldErrors: FieldError[]

  constructor(
    status: number,
    body: ProblemBody | null,
    options: { retryAfterSeconds?: number | null; requestId?: string | null } = {},
  ) {
    const title = body?.title ?? body?.error ?? defaultTitle(status)
    const detail = body?.detail ?? body?.error_description ?? null
    const fieldErrors = body?.errors ?? []
    const retryAfterSeconds = options.retryAfterSeconds ?? null
    super(readableMessage(status, title, detail, fieldErrors, retryAfterSeconds))
    this.name = 'ApiError'
    this.status = status
    this.title = title
    this.detail = detail
    this.fieldErrors = fieldErrors
    this.retryAfterSeconds = retryAfterSeconds
    this.requestId = options.requestId ?? body?.request_id ?? null
  }

  /** The credential is missing, wrong or expired: the user must sign in again. */
  get needsSignIn(): boolean {
    return this.status === 401
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date); null when absent. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null || value.trim() === '') return null
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed)
  const date = Date.parse(trimmed)
  if (Number.isNaN(date)) return null
  return Math.max(0, Math.ceil((date - now) / 1000))
}

function defaultTitle(status: number): string {
  const titles: Record<number, string> = {
    0: 'Network error',
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    409: 'Conflict',
    413: 'Content Too Large',
    415: 'Unsupported Media Type',
    422: 'Unprocessable Content',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
  }
  return titles[status] ?? `HTTP ${status}`
}

function seconds(n: number): string {
  return n === 1 ? '1 second' : `${n} seconds`
}

/** One sentence a person can act on, built from the status and the problem document. */
export function readableMessage(
  status: number,
  title: string,
  detail: string | null,
  fieldErrors: FieldError[] = [],
  retryAfterSeconds: number | null = null,
): string {
  const what = detail ? `: ${detail}` : ''
  switch (status) {
    case 0:
      return `The gateway cannot be reached${what}. Check your connection and try again.`
    case 401:
      return `You are not signed in or your session expired${what}. Please sign in again.`
    case 403:
      return `You are not allowed to do this${what}.`
    case 413:
      return `Too large${what}.`
    case 422: {
      if (fieldErrors.length > 0) {
        const fields = fieldErrors.map((e) => `${e.field.replace(/^body\./, '')}: ${e.message}`)
        return `Some values are not valid: ${fields.join('; ')}.`
      }
      return detail ? `Not accepted: ${detail}.` : 'Some values are not valid.'
    }
    case 429: {
      const wait = retryAfterSeconds !== null ? ` Try again in ${seconds(retryAfterSeconds)}.` : ' Try again shortly.'
      return `Too many requests${what}.${wait}`
    }
    case 503: {
      const wait = retryAfterSeconds !== null ? ` Try again in ${seconds(retryAfterSeconds)}.` : ' Try again shortly.'
      return `The service is unavailable${what}.${wait}`
    }
    default:
      return detail ? `${title}: ${detail}` : title
  }
}

/** The message to show for anything thrown by the client. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message
  if (error instanceof Error) return error.message
  return String(error)
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError'
}
