import { describe, expect, it } from 'vitest'

import { ApiError, parseRetryAfter } from '../../src/api/errors'

describe('ApiError messages', () => {
  it('uses the title and detail of a problem document', () => {
    const error = new ApiError(404, { title: 'Not Found', status: 404, detail: "collection 'docs' does not exist" })
    expect(error.message).toBe("Not Found: collection 'docs' does not exist")
    expect(error.title).toBe('Not Found')
  })

  it('asks to sign in again on 401 and says so', () => {
    const error = new ApiError(401, { title: 'Unauthorized', detail: 'invalid API key' })
    expect(error.message).toBe('You are not signed in or your session expired: invalid API key. Please sign in again.')
    expect(error.needsSignIn).toBe(true)
  })

  it('says not allowed on 403', () => {
    expect(new ApiError(403, { title: 'Forbidden', detail: 'this operation needs the role editor' }).message).toBe(
      'You are not allowed to do this: this operation needs the role editor.',
    )
  })

  it('gives the wait of a 429 from Retry-After', () => {
    const error = new ApiError(429, { title: 'Too Many Requests', detail: 'rate limit exceeded' }, { retryAfterSeconds: 12 })
    expect(error.message).toBe('Too many requests: rate limit exceeded. Try again in 12 seconds.')
    expect(error.retryAfterSeconds).toBe(12)
  })

  it('explains 413 and 503', () => {
    expect(new ApiError(413, { title: 'Content Too Large', detail: "'big.pdf' is larger than 50 MiB" }).message).toBe(
      "Too large: 'big.pdf' is larger than 50 MiB.",
    )
    expect(new ApiError(503, { title: 'Service Unavailable', detail: 'a backend service is unavailable' }, { retryAfterSeconds: 1 }).message).toBe(
      'The service is unavailable: a backend service is unavailable. Try again in 1 second.',
    )
  })

  it('lists the fields of a validation error', () => {
    const error = new ApiError(422, {
      title: 'Unprocessable Content',
      errors: [{ field: 'body.top_k', message: 'Input should be less than or equal to 100', type: 'less_than_equal' }],
    })
    expect(error.message).toBe('Some values are not valid: top_k: Input should be less than or equal to 100.')
  })

  it('reads OAuth2 token errors', () => {
    const error = new ApiError(400, { error: 'invalid_grant', error_description: 'wrong username or password' })
    expect(error.message).toBe('invalid_grant: wrong username or password')
  })
})

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('3')).toBe(3)
    expect(parseRetryAfter(null)).toBeNull()
    expect(parseRetryAfter('soon')).toBeNull()
    const now = Date.parse('2026-11-25T10:00:00Z')
    expect(parseRetryAfter('Wed, 25 Nov 2026 10:00:30 GMT', now)).toBe(30)
  })
})
