import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'

import AnswerText from '../../src/components/AnswerText.vue'
import ChunkDialog from '../../src/components/ChunkDialog.vue'

const citation = (source: number, id: string) => ({
  source,
  document_id: id,
  chunk_id: `${id}#0`,
  text: `Text of ${id}.`,
  score: 0.5,
  metadata: {},
})

describe('AnswerText', () => {
  it('turns known [n] markers into buttons that open the source, and leaves others as text', async () => {
    const wrapper = mount(AnswerText, {
      props: { text: 'Built in 1874 [1]. Lamp [2]. Unknown [7].', sources: [citation(1, 'a.md'), citation(2, 'b.md')] },
    })
    const buttons = wrapper.findAll('button.cite')
    expect(buttons.map((b) => b.text())).toEqual(['[1]', '[2]'])
    expect(buttons[0]?.attributes('aria-label')).toBe('Open source 1: a.md')
    expect(wrapper.text()).toBe('Built in 1874 [1]. Lamp [2]. Unknown [7].')
    await buttons[1]?.trigger('click')
    expect(wrapper.emitted('open')?.[0]?.[0]).toMatchObject({ document_id: 'b.md' })
  })
})

describe('ChunkDialog', () => {
  it('shows the cited chunk as a modal dialog, focuses it and closes on Escape', async () => {
    const wrapper = mount(ChunkDialog, { props: { citation: citation(3, 'c.md') }, attachTo: document.body })
    const dialog = wrapper.get('[role="dialog"]')
    expect(dialog.attributes('aria-modal')).toBe('true')
    expect(dialog.text()).toContain('Source [3]: c.md')
    expect(dialog.text()).toContain('Text of c.md.')
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(document.activeElement?.textContent).toBe('Close')
    await wrapper.get('.dialog-backdrop').trigger('keydown', { key: 'Escape' })
    expect(wrapper.emitted('close')).toHaveLength(1)
    wrapper.unmount()
  })
})
