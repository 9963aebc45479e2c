/**
 * A server-sent events parser for the gateway's typed streams (/v1/ask, /v1/summarize,
 * conversation messages). Chunks of text go in as they arrive, whole events come out:
 *
 *     event: delta
 *     data: {"text": "Paris"}
 *
 * Frames end with a blank line; several `data:` lines join with "\n"; lines starting with
 * ":" are comments; CRLF, LF and CR line ends are all accepted (WHATWG SSE rules).
 */

export interface SseEvent {
  /** The `event:` field; "message" when absent. */
  event: string
  /** The `data:` lines joined with "\n". */
  data: string
  id?: string
}

export class SseParser {
  private buffer = ''
  private event = ''
  private data: string[] = []
  private id: string | undefined

  /** Feed a chunk; returns the events it completed. */
  push(chunk: string): SseEvent[] {
    this.buffer += chunk
    const events: SseEvent[] = []
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer)
      if (match === null) break
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break
      const line = this.buffer.slice(0, match.index)
      this.buffer = this.buffer.slice(match.index + match[0].length)
      const event = this.line(line)
      if (event !== null) events.push(event)
    }
    return events
  }

  /** The stream ended: a final frame without its blank line is still delivered. */
  end(): SseEvent[] {
    const events: SseEvent[] = []
    if (this.buffer !== '') {
      const event = this.line(this.buffer)
      this.buffer = ''
      if (event !== null) events.push(event)
    }
    const last = this.dispatch()
    if (last !== null) events.push(last)
    return events
  }

  private line(line: string): SseEvent | null {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') this.event = value
    else if (field === 'data') this.data.push(value)
    else if (field === 'id') this.id = value
    return null
  }

  private dispatch(): SseEvent | null {
    if (this.data.length === 0) {
      this.event = ''
      return null
    }
    const event: SseEvent = { event: this.event || 'message', data: this.data.join('\n') }
    if (this.id !== undefined) event.id = this.id
    this.event = ''
    this.data = []
    return event
  }
}
