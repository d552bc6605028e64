"""How a streamed answer is drawn: blocks the model has finished are rendered once and keep their
DOM nodes while later frames arrive; the unfinished tail is rendered again per frame and updated in
place, and every frame shows what rendering the whole text so far would."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.e2e.web.pages import Site, answered, ask, open_with_token

# The blocks of the answer being streamed (and the items of its lists) that have two element
# siblings after them are finished: the unfinished tail is at most the last block and the one a
# partial line starts. From then on each must stay in the answer, the same node, until it completes.
WATCH_FINISHED_BLOCKS = """() => {
    window.__finished = new Set();
    window.__checks = 0;
    window.__lost = [];
    new MutationObserver(() => {
        const body = document.querySelector('#messages .message.assistant[aria-busy="true"] .body');
        if (!body) return;
        for (const node of window.__finished) {
            window.__checks++;
            if (!body.contains(node)) window.__lost.push(node.outerHTML.slice(0, 80));
        }
        for (const parent of [body, ...body.querySelectorAll(':scope > ol, :scope > ul')]) {
            for (const node of [...parent.children].slice(0, -2)) window.__finished.add(node);
        }
    }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
}"""

# A sample with the constructs whose extent later text decides: loose and nested lists, fences with
# and without a language, a table (its header row is a paragraph until the delimiter row comes), a
# setext heading, a quote with a lazy line, and "#" after a paragraph (a heading, or "#hashtag").
SAMPLE = """# Study plan

Learning French takes **steady** practice and `patience`.
Here is a plan.

1. Vocabulary
2. Grammar

   - verbs
   - nouns

3. Listening

```python
def study(hours):
    return hours * 2
```

```
plain code
```

| Month | Focus |
|-------|-------|
| 1 | Basics |
| 2 | Verbs |

Summary
-------

> Practice daily,
even briefly.

A paragraph
#hashtag follows it
# A real heading

---

Done, *bonne chance*!
"""

STREAM_EVERY_PREFIX = """async (text) => {
    const { StreamedMarkdown, renderMarkdown } = await import(new URL("static/markdown.js", document.baseURI).href);
    const streamed = document.createElement("div");
    const whole = document.createElement("div");
    const view = new StreamedMarkdown(streamed);
    const differences = [];
    let first = null;
    for (let end = 1; end <= text.length; end++) {
        view.update(text.slice(0, end));
        first ??= streamed.children.length >= 3 ? streamed.children[0] : null;
        renderMarkdown(whole, text.slice(0, end), false);
        if (streamed.innerHTML !== whole.innerHTML) differences.push(text.slice(0, end).slice(-30));
    }
    return {differences, blocks: streamed.children.length, firstKept: first !== null && streamed.contains(first)};
}"""


def test_finished_blocks_keep_their_nodes_while_later_frames_arrive(page: Page, site: Site) -> None:
    open_with_token(page, site)
    page.evaluate(WATCH_FINISHED_BLOCKS)
    answered(ask(page, "Write a detailed study plan for learning French in one year.", max_new_tokens=120))
    finished, checks, lost = page.evaluate("[window.__finished.size, window.__checks, window.__lost]")
    assert finished >= 3 and checks >= 20, f"an answer of a few blocks or list items: {finished}, {checks}"
    assert lost == [], f"finished blocks were drawn again: {lost}"


def test_every_frame_shows_what_rendering_the_whole_text_would(page: Page, site: Site) -> None:
    open_with_token(page, site)
    result = page.evaluate(STREAM_EVERY_PREFIX, SAMPLE)
    assert result["differences"] == [], result["differences"][:5]
    assert result["blocks"] >= 12 and result["firstKept"], result
