import { describe, expect, it } from 'vitest'

import { SseParser } from '../../src/api/sse'

describe('SseParser', () => {
  it('parses typed frames', () => {
    const parser = new SseParser()
    const events = parser.push('event: delta\ndata: {"text":"Par"}\n\nevent: done\ndata: {"model":"default"}\n\n')
    expect(events).toEqual([
      { event: 'delta', data: '{"text":"Par"}' },
      { event: 'done', data: '{"model":"default"}' },
    ])
  })

  it('keeps a frame split across chunks until its blank line', () => {
    const parser = new SseParser()
    expect(parser.push('event: del')).toEqual([])
    expect(parser.push('ta\ndata: {"te')).toEqual([])
    expect(parser.push('xt":"a"}\n')).toEqual([])
    expect(parser.push('\n')).toEqual([{ event: 'delta', data: '{"text":"a"}' }])
  })

  it('accepts CRLF and CR line ends, including a CRLF split between chunks', () => {
    const parser = new SseParser()
    expect(parser.push('event: a\r\ndata: 1\r')).toEqual([])
    expect(parser.push('\n\r\nevent: b\rdata: 2\r')).toEqual([{ event: 'a', data: '1' }])
    // The trailing "\r" may be half of a "\r\n": the frame ends with the next chunk.
    expect(parser.push('\r')).toEqual([])
    expect(parser.push('data: 3\n\n')).toEqual([
      { event: 'b', data: '2' },
      { event: 'message', data: '3' },
    ])
  })

  it('joins data lines, skips comments, defaults the name to message', () => {
    const parser = new SseParser()
    const events = parser.push(': keep-alive\ndata: one\ndata:two\nid: 7\n\n')
    expect(events).toEqual([{ event: 'message', data: 'one\ntwo', id: '7' }])
  })

  it('ignores frames without data and resets the event name', () => {
    const parser = new SseParser()
    expect(parser.push('event: ping\n\ndata: x\n\n')).toEqual([{ event: 'message', data: 'x' }])
  })

  it('delivers a last frame that lacks its blank line at the end', () => {
    const parser = new SseParser()
    expect(parser.push('event: done\ndata: {}')).toEqual([])
    expect(parser.end()).toEqual([{ event: 'done', data: '{}' }])
  })
})
