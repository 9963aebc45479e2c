/**
 * Collections, their documents and uploads. Each file is its own upload (so each has its
 * own progress bar and its own rejection message) and its own ingestion job, polled until
 * it succeeds or fails.
 */

import { defineStore } from 'pinia'
import { ref } from 'vue'

import type { CollectionInfo, DocumentInfo, JobStatus } from '../api/api'
import { errorMessage } from '../api/errors'
import { useApi } from '../api/inject'

/** What the gateway parses (services/gateway parsing); others are rejected before upload. */
export const ACCEPTED_EXTENSIONS = ['.txt', '.md', '.markdown', '.html', '.htm', '.pdf', '.docx', '.csv', '.json']
/** The gateway's per-file limit (MAX_FILE_BYTES). */
export const MAX_FILE_BYTES = 50 * 1024 * 1024
export const POLL_MS = 1000

export type UploadState = 'rejected' | 'uploading' | 'queued' | 'running' | 'succeeded' | 'failed'

export interface UploadItem {
  key: number
  name: string
  size: number
  state: UploadState
  /** Bytes sent, 0..1. */
  progress: number
  message: string
  jobId: string | null
  job: JobStatus | null
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

/** Why the gateway would refuse this file, or null. */
export function rejectReason(file: { name: string; size: number }): string | null {
  const dot = file.name.lastIndexOf('.')
  const extension = dot === -1 ? '' : file.name.slice(dot).toLowerCase()
  if (!ACCEPTED_EXTENSIONS.includes(extension)) {
    return `${file.name}: this file type is not supported (use ${ACCEPTED_EXTENSIONS.join(' ')}).`
  }
  if (file.size === 0) return `${file.name}: the file is empty.`
  if (file.size > MAX_FILE_BYTES) {
    return `${file.name}: the file is ${formatBytes(file.size)}, more than the ${formatBytes(MAX_FILE_BYTES)} allowed.`
  }
  return null
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export const useDocumentsStore = defineStore('documents', () => {
  const api = useApi()
  const collections = ref<CollectionInfo[]>([])
  const selected = ref('')
  const documents = ref<DocumentInfo[]>([])
  const uploads = ref<UploadItem[]>([])
  const error = ref('')
  const loading = ref(false)
  let nextKey = 1
  let pollMs = POLL_MS

  function setPollInterval(ms: number): void {
    pollMs = ms
  }

  async function loadCollections(): Promise<void> {
    error.value = ''
    try {
      collections.value = await api.collections()
      if (!selected.value && collections.value[0]) selected.value = collections.value[0].name
    } catch (caught) {
      error.value = errorMessage(caught)
    }
  }

  async function createCollection(name: string): Promise<boolean> {
    error.value = ''
    try {
      await api.createCollection(name)
      await loadCollections()
      selected.value = name
      await loadDocuments()
      return true
    } catch (caught) {
      error.value = errorMessage(caught)
      return false
    }
  }

  async function loadDocuments(): Promise<void> {
    if (!selected.value) {
      documents.value = []
      return
    }
    loading.value = true
    error.value = ''
    try {
      documents.value = await api.documents(selected.value)
    } catch (caught) {
      documents.value = []
      error.value = errorMessage(caught)
    } finally {
      loading.value = false
    }
  }

  async function deleteDocument(id: string): Promise<void> {
    error.value = ''
    try {
      await api.deleteDocument(selected.value, id)
      documents.value = documents.value.filter((d) => d.id !== id)
    } catch (caught) {
      error.value = errorMessage(caught)
    }
  }

  async function follow(item: UploadItem): Promise<void> {
    while (item.jobId !== null) {
      try {
        const job = await api.job(item.jobId)
        item.job = job
        item.state = job.state
        if (job.state === 'succeeded') {
          item.message = `Stored: ${job.progress.documents_total} document(s), ${job.progress.chunks_total} chunk(s).`
          return
        }
        if (job.state === 'failed') {
          item.message = job.errors.join('; ') || 'The ingestion job failed.'
          return
        }
        item.message = `Embedding ${job.progress.chunks_embedded} of ${job.progress.chunks_total} chunks.`
      } catch (caught) {
        item.state = 'failed'
        item.message = errorMessage(caught)
        return
      }
      await sleep(pollMs)
    }
  }

  async function uploadOne(collection: string, file: File, item: UploadItem): Promise<void> {
    try {
      const accepted = await api.upload(collection, [file], (progress) => {
        item.progress = progress.total > 0 ? progress.loaded / progress.total : item.progress
      })
      item.progress = 1
      item.jobId = accepted.job_id
      item.state = 'queued'
      item.message = 'Queued for embedding.'
      await follow(item)
    } catch (caught) {
      item.state = 'rejected'
      item.message = errorMessage(caught)
    }
  }

  /** Validate and upload each file; resolves when every job has finished. */
  async function addFiles(files: File[]): Promise<void> {
    const collection = selected.value
    const work: Promise<void>[] = []
    for (const file of files) {
      const reason = collection ? rejectReason(file) : 'Choose or create a collection first.'
      uploads.value.unshift({
        key: nextKey++,
        name: file.name,
        size: file.size,
        state: reason ? 'rejected' : 'uploading',
        progress: 0,
        message: reason ?? 'Uploading…',
        jobId: null,
        job: null,
      })
      const item = uploads.value[0] as UploadItem
      if (!reason) work.push(uploadOne(collection, file, item))
    }
    await Promise.all(work)
    if (work.length > 0 && selected.value === collection) await loadDocuments()
  }

  function clearFinished(): void {
    uploads.value = uploads.value.filter((u) => u.state === 'uploading' || u.state === 'queued' || u.state === 'running')
  }

  return {
    collections,
    selected,
    documents,
    uploads,
    error,
    loading,
    setPollInterval,
    loadCollections,
    createCollection,
    loadDocuments,
    deleteDocument,
    addFiles,
    clearFinished,
  }
})
