/**
 * A stored document's text, rebuilt from its chunks (the API keeps chunks, not files):
 * a search restricted to the document's file, its chunks put back in order and the
 * overlap between neighbours (the chunker repeats some tokens) removed.
 */

import type { Api, DocumentInfo } from '../api/api'

/** Most chunks one search returns (the gateway's top_k limit). */
export const MAX_CHUNKS = 100

/** Join chunks, dropping the start of each that repeats the end of the one before. */
export function joinChunks(chunks: string[]): string {
  let text = ''
  for (const chunk of chunks) {
    if (!text) {
      text = chunk
      continue
    }
    let overlap = 0
    for (let k = Math.min(chunk.length, text.length, 4000); k >= 8; k--) {
      if (text.endsWith(chunk.slice(0, k))) {
        overlap = k
        break
      }
    }
    text += overlap ? chunk.slice(overlap) : `\n${chunk}`
  }
  return text
}

export async function documentText(api: Api, collection: string, doc: DocumentInfo): Promise<string> {
  const source = doc.metadata?.source
  const results = await api.search(collection, {
    query: doc.id,
    top_k: MAX_CHUNKS,
    filter: typeof source === 'string' ? { source } : null,
  })
  const chunks = results
    .filter((r) => r.document_id === doc.id)
    .sort((a, b) => a.chunk_index - b.chunk_index)
    .map((r) => r.text)
  return joinChunks(chunks)
}
