import { describe, expect, it } from 'vitest'

import { joinChunks } from '../../src/lib/documentText'

describe('joinChunks', () => {
  it('removes the overlap the chunker repeats between neighbours', () => {
    expect(joinChunks(['The lighthouse was built in 1874 on the cliff.', 'built in 1874 on the cliff. Its lamp is bright.'])).toBe(
      'The lighthouse was built in 1874 on the cliff. Its lamp is bright.',
    )
  })

  it('puts chunks without overlap on separate lines', () => {
    expect(joinChunks(['First part.', 'Second part.'])).toBe('First part.\nSecond part.')
    expect(joinChunks([])).toBe('')
  })
})
