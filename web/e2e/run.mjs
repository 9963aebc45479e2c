#!/usr/bin/env node
// End-to-end run of the web app in Debian's Chromium (playwright-core), against a running
// gateway that serves the built app. Driven by tests/web/test_e2e.py; runnable by hand:
//
//   AIMESH_E2E_BASE_URL=http://127.0.0.1:8000 AIMESH_E2E_USERNAME=ada AIMESH_E2E_PASSWORD=... \
//   AIMESH_E2E_FILE=/path/to/doc.md AIMESH_E2E_QUESTION="..." AIMESH_E2E_SCREENSHOTS=test-results \
//   node e2e/run.mjs
//
// Flow: sign in -> create a collection -> upload the file -> wait for its job -> search ->
// chat grounded in the collection: the streamed answer cites the file, the citation opens
// the chunk, thumbs up -> summarize the stored document -> admin (keys, usage, feedback) ->
// a plain chat streams from the local model (AIMESH_E2E_CHAT_MODEL) -> phone width ->
// sign out -> sign in again with an API key (service user) -> sign out.
// Prints one JSON line per step ({"step", "ms"}); exits 1 with a failure screenshot.
import { mkdirSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'

import { chromium } from 'playwright-core'

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback
  if (value === undefined) throw new Error(`${name} is not set`)
  return value
}
const baseUrl = env('AIMESH_E2E_BASE_URL').replace(/\/$/, '')
const username = env('AIMESH_E2E_USERNAME')
const password = env('AIMESH_E2E_PASSWORD')
const file = env('AIMESH_E2E_FILE')
const question = env('AIMESH_E2E_QUESTION')
const expectText = env('AIMESH_E2E_EXPECT', '')
const shots = env('AIMESH_E2E_SCREENSHOTS', 'test-results')
const collection = env('AIMESH_E2E_COLLECTION', 'e2e')
const chromiumPath = env('AIMESH_E2E_CHROMIUM', '/usr/bin/chromium')
const timeout = Number(env('AIMESH_E2E_TIMEOUT_MS', '60000'))
// The alias a plain chat (no collection) must be answered by: the local model server's.
const chatModel = env('AIMESH_E2E_CHAT_MODEL', '')
const fileName = basename(file)

mkdirSync(shots, { recursive: true })

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
})
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } })
const page = await context.newPage()
page.setDefaultTimeout(timeout)
const consoleErrors = []
page.on('console', (message) => {
  if (message.type() === 'error') consoleErrors.push(message.text())
})
page.on('pageerror', (error) => consoleErrors.push(String(error)))

const started = Date.now()
let current = 'start'
let serviceKey = ''
async function step(name, body) {
  current = name
  const t0 = Date.now()
  const facts = (await body()) ?? {}
  console.log(JSON.stringify({ step: name, ms: Date.now() - t0, ...facts }))
}
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })
const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true }).click()

try {
  await step('sign-in', async () => {
    await page.goto(`${baseUrl}/`)
    await page.waitForURL(/\/signin/)
    await page.getByRole('heading', { name: 'Sign in' }).waitFor()
    await shot('01-sign-in')
    await page.getByLabel('Username', { exact: true }).fill(username)
    await page.getByLabel('Password', { exact: true }).fill(password)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(/\/chat/)
    await page.getByRole('heading', { name: 'Chat', level: 1 }).waitFor()
  })

  await step('upload', async () => {
    await nav('Documents')
    await page.getByRole('heading', { name: 'Documents', level: 1 }).waitFor()
    await page.getByLabel('New collection').fill(collection)
    await page.getByRole('button', { name: 'Create' }).click()
    await page.getByLabel('Collection', { exact: true }).locator(`option[value="${collection}"]`).waitFor({ state: 'attached' })
    // One supported file and one the app must refuse before uploading, with a clear message.
    await page.setInputFiles('#file-input', [
      { name: fileName, mimeType: 'text/plain', buffer: readFileSync(file) },
      { name: 'tool.exe', mimeType: 'application/octet-stream', buffer: Buffer.from('MZ') },
    ])
    const uploads = page.getByTestId('uploads')
    await uploads.locator('li[data-state="rejected"]', { hasText: 'tool.exe' }).getByText('not supported').waitFor()
    await uploads.locator('li[data-state="succeeded"]', { hasText: fileName }).waitFor()
    await page.getByTestId('documents').getByText(fileName).waitFor()
    await shot('02-documents')
  })

  await step('search', async () => {
    await nav('Search')
    await page.getByLabel('Query', { exact: true }).fill(question)
    await page.getByRole('radio', { name: /Hybrid/ }).check()
    await page.getByRole('button', { name: 'Search', exact: true }).click()
    const results = page.getByTestId('results')
    await results.getByText(fileName).first().waitFor()
    await results.locator('mark').first().waitFor()
    await shot('03-search')
  })

  await step('chat', async () => {
    await nav('Chat')
    await page.getByLabel('Ground in collection').selectOption(collection)
    await page.getByRole('button', { name: 'New conversation' }).click()
    await page.getByLabel('Message', { exact: true }).fill(question)
    await page.getByLabel('Message', { exact: true }).press('Enter')
    const answer = page.getByTestId('answer').last()
    // Streamed: the reply is busy while tokens arrive, then done with its sources.
    await page.getByRole('button', { name: 'Good answer' }).waitFor()
    const text = await answer.innerText()
    if (expectText && !text.includes(expectText)) throw new Error(`the answer does not contain "${expectText}": ${text}`)
    const citation = page.getByTestId('citations').last().getByRole('button', { name: new RegExp(fileName.replace('.', '\\.')) })
    await citation.first().waitFor()
    await citation.first().click()
    const dialog = page.getByRole('dialog')
    await dialog.getByText(expectText || fileName).first().waitFor()
    await shot('04-chat-citation')
    await page.keyboard.press('Escape')
    await dialog.waitFor({ state: 'detached' })
    await page.getByRole('button', { name: 'Good answer' }).click()
    await page.getByText('Thanks for the feedback.').waitFor()
    await shot('05-chat')
    // Kept server-side: after a reload the conversation is listed and reopens with its reply.
    await page.reload()
    await page.getByRole('button', { name: /^Delete conversation/ }).first().waitFor()
    await page.locator('.conversation-button').first().click()
    await page.getByTestId('messages').getByText(expectText || question).first().waitFor()
  })

  await step('model-chat', async () => {
    // A plain chat (no collection, model "Automatic"): the server's chat default, the
    // local model, streams its reply token by token.
    await page.getByLabel('Ground in collection').selectOption('')
    await page.getByLabel('Model', { exact: true }).selectOption('')
    await page.getByRole('button', { name: 'New conversation', exact: true }).click()
    await page.getByLabel('Message', { exact: true }).fill('Say hello to Ada in one short sentence.')
    await page.getByLabel('Message', { exact: true }).press('Enter')
    await page.waitForFunction(() => {
      const answers = document.querySelectorAll('[data-testid="answer"]')
      const last = answers[answers.length - 1]
      return last !== undefined && last.getAttribute('aria-busy') === 'false' && last.getAttribute('data-model') !== ''
    })
    const answer = page.getByTestId('answer').last()
    const model = await answer.getAttribute('data-model')
    const chunks = Number(await answer.getAttribute('data-chunks'))
    const text = (await answer.innerText()).trim()
    if (chatModel && model !== chatModel) throw new Error(`the chat was answered by ${model}, not ${chatModel}`)
    if (chatModel && chunks < 2) throw new Error(`the reply arrived in ${chunks} chunk(s), not streamed`)
    if (!text) throw new Error('the chat reply is empty')
    await shot('05b-model-chat')
    return { model, chunks }
  })

  await step('summarize', async () => {
    await nav('Summarize')
    await page.getByRole('radio', { name: 'A stored document' }).check()
    await page.getByLabel('Collection', { exact: true }).selectOption(collection)
    await page.getByLabel('Document', { exact: true }).locator(`option[value="${fileName}"]`).waitFor({ state: 'attached' })
    await page.getByLabel('Document', { exact: true }).selectOption(fileName)
    await page.getByRole('radio', { name: 'Bullets' }).check()
    await page.getByRole('button', { name: 'Summarize', exact: true }).click()
    await page.getByRole('button', { name: 'Good answer' }).waitFor()
    const summary = await page.getByTestId('summary').innerText()
    if (!summary.trim()) throw new Error('the summary is empty')
    await shot('06-summarize')
  })

  await step('admin', async () => {
    await nav('Admin')
    await page.getByRole('heading', { name: 'API keys' }).waitFor()
    // Create a key (shown once), see it listed, revoke it (the confirm dialog is accepted).
    await page.getByLabel('Name', { exact: true }).fill('e2e-key')
    await page.getByRole('button', { name: 'Create key' }).click()
    const key = await page.getByTestId('new-key').innerText()
    if (!/^am_[A-Za-z0-9]+_/.test(key)) throw new Error(`the new key does not look like an aimesh key: ${key.slice(0, 6)}`)
    await page.getByRole('button', { name: 'Done' }).click()
    const row = page.locator('tbody tr', { hasText: 'e2e-key' })
    page.once('dialog', (dialog) => void dialog.accept())
    await row.getByRole('button', { name: 'Revoke e2e-key' }).click()
    await row.getByText(/^revoked/).waitFor()
    // A key for a service user (role user), used below to sign in in API-key mode.
    await page.getByLabel('Name', { exact: true }).fill('e2e-service')
    await page.getByRole('button', { name: 'Create key' }).click()
    serviceKey = await page.getByTestId('new-key').innerText()
    await page.getByRole('button', { name: 'Done' }).click()
    await page.getByRole('heading', { name: 'Usage' }).waitFor()
    await page.waitForLoadState('networkidle')
    await shot('07-admin')
  })

  await step('phone-width', async () => {
    await page.setViewportSize({ width: 375, height: 740 })
    for (const screen of ['Documents', 'Search', 'Summarize', 'Admin', 'Chat']) {
      await nav(screen)
      await page.getByRole('heading', { name: screen, level: 1 }).waitFor()
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      if (overflow > 1) throw new Error(`${screen} is ${overflow}px wider than a 375px phone screen`)
    }
    await shot('08-phone-chat')
    await page.setViewportSize({ width: 1280, height: 860 })
  })

  await step('sign-out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.waitForURL(/\/signin/)
    const stored = await page.evaluate(() => sessionStorage.getItem('aimesh.auth'))
    if (stored !== null) throw new Error('the credential is still in session storage after sign-out')
    await page.goto(`${baseUrl}/documents`)
    await page.waitForURL(/\/signin/)
  })

  await step('api-key', async () => {
    await page.getByRole('radio', { name: /API key/ }).check()
    await page.getByLabel('API key', { exact: true }).fill(serviceKey)
    await page.getByRole('button', { name: 'Sign in' }).click()
    // Back to the page asked for before; a user key sees no Admin screen.
    await page.waitForURL(/\/documents/)
    await page.getByTestId('documents').getByText(fileName).waitFor()
    const links = await page.getByRole('navigation', { name: 'Main' }).innerText()
    if (links.includes('Admin')) throw new Error('a user key sees the Admin screen')
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.waitForURL(/\/signin/)
  })

  const serious = consoleErrors.filter((text) => !/Failed to load resource/.test(text))
  if (serious.length) throw new Error(`errors in the browser console: ${serious.join(' | ')}`)
  console.log(JSON.stringify({ step: 'all', ms: Date.now() - started }))
} catch (error) {
  console.error(`e2e failed at step ${current}: ${error instanceof Error ? error.stack : error}`)
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => undefined)
  await browser.close()
  process.exit(1)
}
await browser.close()
