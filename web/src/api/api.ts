/**
 * The gateway's routes, typed with the OpenAPI document (schema.d.ts, generated from
 * openapi.json by `make web-schema`): request and response bodies are the schema's
 * components, and {@link route} accepts only path templates the schema has, so a route
 * renamed or removed on the server fails `vue-tsc` here.
 */

import type { ApiClient, ApiResponse, StreamEvent, UploadProgress } from './client'
import type { components, paths } from './schema'

export type Schemas = components['schemas']
export type TokenResponse = Schemas['TokenResponse']
export type ModelList = Schemas['ModelList']
export type CollectionInfo = Schemas['CollectionInfo']
export type DocumentInfo = Schemas['DocumentInfo']
export type UploadAccepted = Schemas['UploadAccepted']
export type JobStatus = Schemas['JobStatus']
export type SearchRequest = Schemas['SearchRequest']
export type SearchResult = Schemas['SearchResult']
export type Citation = Schemas['Citation']
export type Conversation = Schemas['Conversation']
export type SummarizeRequest = Schemas['SummarizeRequest']
export type KeyInfo = Schemas['KeyInfo']
export type KeyCreate = Schemas['KeyCreate']
export type KeyCreated = Schemas['KeyCreated']

export type FeedbackCreate = Schemas['FeedbackCreate']
export type FeedbackItem = Schemas['FeedbackItem']
export type FeedbackAdminItem = Schemas['FeedbackAdminItem']
export type FeedbackSummaryRow = Schemas['FeedbackSummaryRow']
export type UsageReport = Schemas['UsageReport']
export type BudgetInfo = Schemas['BudgetInfo']
export type BudgetCreate = Schemas['BudgetCreate']
export type BudgetUpdate = Schemas['BudgetUpdate']

export type ApiPath = keyof paths

/** A path of the schema with its `{params}` filled in (percent-encoded). */
export function route<P extends ApiPath>(template: P, params: Record<string, string> = {}): string {
  return template.replace(/\{([A-Za-z_]+)\}/g, (_, name: string) => {
    const value = params[name]
    if (value === undefined) throw new Error(`route ${template}: missing parameter ${name}`)
    return encodeURIComponent(value)
  })
}

export type EventHandler = (event: StreamEvent) => void

export class Api {
  constructor(readonly client: ApiClient) {}

  // --- auth (OAuth2 token endpoint: form-encoded, no credential) ---
  passwordToken(username: string, password: string): Promise<ApiResponse<TokenResponse>> {
    return this.client.request('POST', route('/v1/auth/token'), {
      form: { grant_type: 'password', username, password },
      anonymous: true,
    })
  }

  refreshToken(refreshToken: string): Promise<ApiResponse<TokenResponse>> {
    return this.client.request('POST', route('/v1/auth/token'), {
      form: { grant_type: 'refresh_token', refresh_token: refreshToken },
      anonymous: true,
    })
  }

  // --- models, collections, documents, jobs ---
  async models(): Promise<ModelList> {
    return (await this.client.request<ModelList>('GET', route('/v1/models'))).data
  }

  async collections(): Promise<CollectionInfo[]> {
    const reply = await this.client.request<Schemas['CollectionList']>('GET', route('/v1/collections'))
    return reply.data.collections
  }

  async createCollection(name: string): Promise<CollectionInfo> {
    const body: Schemas['CreateCollectionRequest'] = { name }
    return (await this.client.request<CollectionInfo>('POST', route('/v1/collections'), { json: body })).data
  }

  async deleteCollection(name: string): Promise<void> {
    await this.client.request('DELETE', route('/v1/collections/{collection}', { collection: name }))
  }

  async documents(collection: string, limit = 1000): Promise<DocumentInfo[]> {
    const reply = await this.client.request<Schemas['DocumentList']>(
      'GET',
      route('/v1/collections/{collection}/documents', { collection }),
      { query: { limit } },
    )
    return reply.data.documents
  }

  async deleteDocument(collection: string, documentId: string): Promise<number> {
    const reply = await this.client.request<Schemas['DeleteDocumentResponse']>(
      'DELETE',
      route('/v1/collections/{collection}/documents/{document_id}', { collection, document_id: documentId }),
    )
    return reply.data.deleted_chunks
  }

  async upload(
    collection: string,
    files: File[],
    onProgress: (progress: UploadProgress) => void,
    signal?: AbortSignal,
  ): Promise<UploadAccepted> {
    const path = route('/v1/collections/{collection}/files', { collection })
    return (await this.client.upload<UploadAccepted>(path, files, onProgress, signal)).data
  }

  async job(jobId: string): Promise<JobStatus> {
    return (await this.client.request<JobStatus>('GET', route('/v1/jobs/{job_id}', { job_id: jobId }))).data
  }

  async search(collection: string, body: SearchRequest): Promise<SearchResult[]> {
    const reply = await this.client.request<Schemas['SearchResponse']>(
      'POST',
      route('/v1/collections/{collection}/search', { collection }),
      { json: body },
    )
    return reply.data.results
  }

  // --- generation (streamed) ---
  ask(body: Omit<Schemas['AskRequest'], 'stream'>, onEvent: EventHandler, signal?: AbortSignal) {
    return this.client.stream(route('/v1/ask'), { ...body, stream: true }, onEvent, signal)
  }

  summarize(body: Omit<SummarizeRequest, 'stream'>, onEvent: EventHandler, signal?: AbortSignal) {
    return this.client.stream(route('/v1/summarize'), { ...body, stream: true }, onEvent, signal)
  }

  async createConversation(body: Schemas['CreateConversationRequest']): Promise<Conversation> {
    return (await this.client.request<Conversation>('POST', route('/v1/conversations'), { json: body })).data
  }

  async listConversations(limit = 50): Promise<Schemas['ConversationSummary'][]> {
    const path = `${route('/v1/conversations')}?limit=${limit}`
    return (await this.client.request<Schemas['ConversationList']>('GET', path)).data.data
  }

  async deleteConversation(id: string): Promise<void> {
    const path = route('/v1/conversations/{conversation_id}', { conversation_id: id })
    await this.client.request<null>('DELETE', path)
  }

  async conversation(id: string): Promise<Conversation> {
    const path = route('/v1/conversations/{conversation_id}', { conversation_id: id })
    return (await this.client.request<Conversation>('GET', path)).data
  }

  sendMessage(id: string, content: string, onEvent: EventHandler, signal?: AbortSignal) {
    const path = route('/v1/conversations/{conversation_id}/messages', { conversation_id: id })
    const body: Schemas['SendMessageRequest'] = { content }
    return this.client.stream(path, body, onEvent, signal)
  }

  // --- feedback ---
  async sendFeedback(body: FeedbackCreate): Promise<FeedbackItem> {
    return (await this.client.request<FeedbackItem>('POST', route('/v1/feedback'), { json: body })).data
  }

  // --- admin ---
  async keys(): Promise<KeyInfo[]> {
    return (await this.client.request<Schemas['KeyList']>('GET', route('/v1/admin/keys'))).data.keys
  }

  async createKey(body: KeyCreate): Promise<KeyCreated> {
    return (await this.client.request<KeyCreated>('POST', route('/v1/admin/keys'), { json: body })).data
  }

  async revokeKey(id: string): Promise<KeyInfo> {
    return (await this.client.request<KeyInfo>('DELETE', route('/v1/admin/keys/{key_id}', { key_id: id }))).data
  }

  async budgets(): Promise<BudgetInfo[]> {
    return (await this.client.request<Schemas['BudgetList']>('GET', route('/v1/admin/budgets'))).data.budgets
  }

  async createBudget(body: BudgetCreate): Promise<BudgetInfo> {
    return (await this.client.request<BudgetInfo>('POST', route('/v1/admin/budgets'), { json: body })).data
  }

  async updateBudget(id: string, body: BudgetUpdate): Promise<BudgetInfo> {
    const path = route('/v1/admin/budgets/{budget_id}', { budget_id: id })
    return (await this.client.request<BudgetInfo>('PATCH', path, { json: body })).data
  }

  async deleteBudget(id: string): Promise<void> {
    await this.client.request<unknown>('DELETE', route('/v1/admin/budgets/{budget_id}', { budget_id: id }))
  }

  async usage(days: number): Promise<UsageReport> {
    return (await this.client.request<UsageReport>('GET', route('/v1/admin/usage'), { query: { days } })).data
  }

  async feedback(rating: 1 | -1 | undefined, limit = 50): Promise<FeedbackAdminItem[]> {
    const reply = await this.client.request<Schemas['FeedbackList']>('GET', route('/v1/admin/feedback'), {
      query: { rating, limit },
    })
    return reply.data.data
  }

  async feedbackSummary(): Promise<FeedbackSummaryRow[]> {
    return (await this.client.request<Schemas['FeedbackSummary']>('GET', route('/v1/admin/feedback/summary'))).data.data
  }
}
