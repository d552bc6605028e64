"""What the model is told when the knowledge base has something on the question, and when it has nothing."""

from __future__ import annotations

from chatllm.server.chat import Retrieved, knowledge_prompt


def test_chunks_become_numbered_context_before_the_question() -> None:
    text = knowledge_prompt("How long is the warranty?", [Retrieved("d1", "guide.md", 0, 0.7, "It lasts 3 years.")])
    assert "[1] (guide.md) It lasts 3 years." in text
    assert text.index("It lasts 3 years.") < text.index("Question: How long is the warranty?")


def test_no_relevant_chunk_tells_the_model_the_knowledge_base_has_nothing() -> None:
    text = knowledge_prompt("What is the capital of Peru?", [])
    assert "The knowledge base has nothing on the question" in text
    assert "Do not make up an answer" in text and "Context:" not in text
    assert text.endswith("Question: What is the capital of Peru?")
