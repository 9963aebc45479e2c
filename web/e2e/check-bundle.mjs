#!/usr/bin/env node
// Fail when a built asset holds something that looks like a secret: API keys (OpenAI "sk-",
// aimesh "am_<prefix>_..."), private keys, JWTs, AWS keys, or the value of a secret variable
// of this environment. Usage: node e2e/check-bundle.mjs <dist dir>  (exit 1 on a finding).
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

export const PATTERNS = [
  ['OpenAI-style key', /\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}/],
  ['aimesh API key', /\bam_[A-Za-z0-9]{2,16}_[A-Za-z0-9_-]{16,}/],
  ['private key', /-----BEGIN [A-Z ]*PRIVATE KEY-----|BEGIN PRIVATE KEY/],
  ['JWT', /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/],
  ['AWS access key', /\bAKIA[0-9A-Z]{16}\b/],
]

const SECRET_VARIABLES = ['AIMESH_ADMIN_API_KEY', 'AIMESH_JWT_SECRET', 'OPENAI_API_KEY', 'AIMESH_OPENAI_API_KEY', 'ANTHROPIC_API_KEY']

/** Findings in one text: [{what, excerpt}]. */
export function scan(text, env = process.env) {
  const findings = []
  for (const [what, pattern] of PATTERNS) {
    const match = pattern.exec(text)
    if (match) findings.push({ what, excerpt: `${match[0].slice(0, 12)}…` })
  }
  for (const name of SECRET_VARIABLES) {
    const value = env[name]
    if (value && value.length >= 8 && text.includes(value)) findings.push({ what: `value of ${name}`, excerpt: '(hidden)' })
  }
  return findings
}

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? files(path) : [path]
  })
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? 'dist'
  let bad = 0
  const all = files(dir)
  for (const path of all) {
    for (const finding of scan(readFileSync(path, 'latin1'))) {
      console.error(`${path}: ${finding.what} (${finding.excerpt})`)
      bad++
    }
  }
  if (bad) {
    console.error(`secret scan: ${bad} finding(s) in ${dir}`)
    process.exit(1)
  }
  console.log(`secret scan: ${all.length} file(s) in ${dir}, nothing that looks like a secret`)
}
