/// <reference types="vitest/config" />
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// `npm run dev` proxies the API to a gateway on :8000 (`make run`); AIMESH_GATEWAY_URL overrides it.
const gateway = process.env.AIMESH_GATEWAY_URL ?? 'http://127.0.0.1:8000'

export default defineConfig({
  plugins: [vue()],
  server: {
    proxy: { '/v1': { target: gateway, changeOrigin: false } },
  },
  build: {
    // Source maps would ship the sources; the bundle stays small and has no secrets either way.
    sourcemap: false,
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.spec.ts'],
    restoreMocks: true,
  },
})
