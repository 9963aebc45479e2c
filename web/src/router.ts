import { createRouter, createWebHistory, type Router, type RouterHistory } from 'vue-router'

import { useAuthStore } from './stores/auth'
import AdminView from './views/AdminView.vue'
import ChatView from './views/ChatView.vue'
import DocumentsView from './views/DocumentsView.vue'
import SearchView from './views/SearchView.vue'
import SignInView from './views/SignInView.vue'
import SummarizeView from './views/SummarizeView.vue'

export function createAppRouter(history: RouterHistory = createWebHistory()): Router {
  const router = createRouter({
    history,
    routes: [
      { path: '/', redirect: '/chat' },
      { path: '/signin', name: 'signin', component: SignInView, meta: { title: 'Sign in', public: true } },
      { path: '/chat', name: 'chat', component: ChatView, meta: { title: 'Chat' } },
      { path: '/documents', name: 'documents', component: DocumentsView, meta: { title: 'Documents' } },
      { path: '/search', name: 'search', component: SearchView, meta: { title: 'Search' } },
      { path: '/summarize', name: 'summarize', component: SummarizeView, meta: { title: 'Summarize' } },
      { path: '/admin', name: 'admin', component: AdminView, meta: { title: 'Admin', admin: true } },
      { path: '/:rest(.*)*', redirect: '/chat' },
    ],
  })
  router.beforeEach((to) => {
    const auth = useAuthStore()
    if (!to.meta.public && !auth.signedIn) {
      return { name: 'signin', query: to.fullPath !== '/chat' ? { next: to.fullPath } : {} }
    }
    if (to.meta.admin && !auth.isAdmin) return { name: 'chat' }
    if (to.name === 'signin' && auth.signedIn) return { name: 'chat' }
    return true
  })
  router.afterEach((to) => {
    document.title = `${String(to.meta.title ?? 'aimesh')} · aimesh`
  })
  return router
}
