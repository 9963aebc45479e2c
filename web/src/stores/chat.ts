/**
 * Conversations: kept by the gateway (llm-router), listed from it per user, newest first.
 * Replies stream token by token; stop() aborts the request, which cancels the model call.
 */

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'

import type { Citation } from '../api/api'
import type { StreamEvent } from '../api/client'
import { ApiError, errorMessage, isAbort } from '../api/errors'
import { useApi } from '../api/inject'

export interface ConversationEntry {
  id: string
  title: string
  model: string
  collection: string | null
  createdAt: number
}

export type MessageStatus = 'streaming' | 'done' | 'stopped' | 'error'

export interface ChatMessage {
  role: 'user' | 'assistant'
  content: string
  status: MessageStatus
  /** Sources given to the model (grounded conversations). */
  sources: Citation[]
  /** Sources the answer actually cites. */
  citations: Citation[]
  requestId: string | null
  model: string
  /** Text chunks (delta events) the reply arrived in: more than one when it streamed. */
  chunks: number
  /** "invalid_citations" when the model's answer was replaced by the extractive one. */
  fallbackReason: string
  error: string
}

/** Apply one stream event to the reply being built. */
export function applyEvent(message: ChatMessage, event: StreamEvent): void {
  const data = event.data
  switch (event.event) {
    case 'delta':
      if (typeof data.text === 'string') {
        message.content += data.text
        message.chunks += 1
      }
      break
    case 'replace':
      // The model's citations did not check out: the extractive answer replaces its text.
      if (typeof data.text === 'string') message.content = data.text
      break
    case 'sources':
      if (Array.isArray(data.sources)) message.sources = data.sources as Citation[]
      break
    case 'citations':
      if (Array.isArray(data.citations)) message.citations = data.citations as Citation[]
      break
    case 'done':
      if (typeof data.model === 'string') message.model = data.model
      if (typeof data.request_id === 'string') message.requestId = data.request_id
      if (typeof data.fallback_reason === 'string') message.fallbackReason = data.fallback_reason
      break
  }
}

export function newReply(): ChatMessage {
  return {
    role: 'assistant',
    content: '',
    status: 'streaming',
    sources: [],
    citations: [],
    requestId: null,
    model: '',
    chunks: 0,
    fallbackReason: '',
    error: '',
  }
}

export const useChatStore = defineStore('chat', () => {
  const api = useApi()
  const conversations = ref<ConversationEntry[]>([])
  const currentId = ref<string | null>(null)
  const messages = ref<ChatMessage[]>([])
  const error = ref('')
  let controller: AbortController | null = null
  const streaming = ref(false)

  const current = computed(() => conversations.value.find((c) => c.id === currentId.value) ?? null)

  async function load(): Promise<void> {
    try {
      const listed = await api.listConversations()
      conversations.value = listed.map((c) => ({
        id: c.id,
        title: c.title,
        model: c.model,
        collection: c.collection ?? null,
        createdAt: c.created_at,
      }))
    } catch (caught) {
      error.value = errorMessage(caught)
    }
  }

  /** A new conversation; an empty model lets the server choose its default for the task
   * (chat without a collection, grounded answers with one). */
  async function start(options: { model: string; collection: string | null; title: string }): Promise<void> {
    error.value = ''
    const created = await api.createConversation({
      model: options.model || null,
      collection: options.collection,
      title: options.title.slice(0, 200),
    })
    conversations.value.unshift({
      id: created.id,
      title: created.title,
      model: created.model,
      collection: created.collection ?? null,
      createdAt: created.created_at,
    })
    currentId.value = created.id
    messages.value = []
  }

  async function open(id: string): Promise<void> {
    error.value = ''
    currentId.value = id
    messages.value = []
    try {
      const conversation = await api.conversation(id)
      messages.value = conversation.messages.map((m) => ({ ...newReply(), role: m.role, content: m.content, status: 'done' }))
    } catch (caught) {
      if (caught instanceof ApiError && caught.status === 404) {
        drop(id)
        error.value = 'That conversation no longer exists; it was removed from the list.'
      } else {
        error.value = errorMessage(caught)
      }
    }
  }

  function drop(id: string): void {
    conversations.value = conversations.value.filter((c) => c.id !== id)
    if (currentId.value === id) {
      currentId.value = null
      messages.value = []
    }
  }

  /** Delete a conversation on the server (one already gone is just dropped). */
  async function remove(id: string): Promise<void> {
    error.value = ''
    try {
      await api.deleteConversation(id)
    } catch (caught) {
      if (!(caught instanceof ApiError && caught.status === 404)) {
        error.value = errorMessage(caught)
        return
      }
    }
    drop(id)
  }

  async function send(content: string): Promise<void> {
    const id = currentId.value
    if (id === null || streaming.value) return
    error.value = ''
    const entry = conversations.value.find((c) => c.id === id)
    if (entry && entry.title === '') entry.title = content.slice(0, 60)
    messages.value.push({ ...newReply(), role: 'user', content, status: 'done' })
    messages.value.push(newReply())
    const reply = messages.value[messages.value.length - 1] as ChatMessage
    controller = new AbortController()
    streaming.value = true
    try {
      const { requestId } = await api.sendMessage(id, content, (event) => applyEvent(reply, event), controller.signal)
      reply.requestId = reply.requestId ?? requestId
      reply.status = 'done'
    } catch (caught) {
      if (isAbort(caught)) {
        reply.status = 'stopped'
      } else {
        reply.status = 'error'
        reply.error = errorMessage(caught)
        if (caught instanceof ApiError) reply.requestId = caught.requestId
      }
    } finally {
      streaming.value = false
      controller = null
    }
  }

  function stop(): void {
    controller?.abort()
  }

  function reset(): void {
    stop()
    conversations.value = []
    currentId.value = null
    messages.value = []
  }

  return { conversations, currentId, current, messages, error, streaming, load, start, open, remove, send, stop, reset }
})
