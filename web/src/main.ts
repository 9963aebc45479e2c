import './styles.css'

import { createAimeshApp } from './app'

const { app, router } = createAimeshApp()
void router.isReady().then(() => app.mount('#app'))
