"""The router's tasks, one module per RPC family; the servicer only calls them.

- :mod:`.summarize`: Summarize and StreamSummarize (map-reduce over long texts).
- :mod:`.answer`: Answer and StreamAnswer (retrieval, source packing, citations).
- :mod:`.generate`: Generate (chat with tools and stop sequences).
- :mod:`.conversations`: the conversation RPCs and SendMessage (stored history).
- :mod:`.responses`: the stored responses of the Responses API (kept, read, deleted).
- :mod:`.common`: what they share: their backends, usage accounting, the stream relay.
- :mod:`.grounding`: the retrieval search and citations of answers and conversations.
"""
