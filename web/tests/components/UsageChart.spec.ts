import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'

import UsageChart from '../../src/components/UsageChart.vue'

describe('UsageChart', () => {
  it('draws one bar per point, scaled to the largest, with an accessible name', () => {
    const wrapper = mount(UsageChart, {
      props: {
        title: 'Requests per day',
        points: [
          { label: '2026-11-23', value: 0 },
          { label: '2026-11-24', value: 5 },
          { label: '2026-11-25', value: 10 },
        ],
      },
    })
    expect(wrapper.get('svg').attributes('role')).toBe('img')
    expect(wrapper.get('svg').attributes('aria-label')).toBe('Requests per day')
    const heights = wrapper.findAll('rect').map((r) => Number(r.attributes('height')))
    expect(heights[0]).toBe(0)
    expect(heights[2]).toBeCloseTo(2 * (heights[1] ?? 0))
    expect(wrapper.findAll('rect title').map((t) => t.text())).toEqual(['2026-11-23: 0', '2026-11-24: 5', '2026-11-25: 10'])
  })
})
