"""Retrieval: passages from rag.docs put before the question (docs/rag.md).

    docs.py      rag.docs -> documents (file:line errors) -> chunks of chunk_tokens tokens
    index.py     the BM25 index (bm25s), cached by the docs' content and the chunk settings
    retrieve.py  Passage, Retriever.build(settings, tokenizer).search(question, k)
    prompt.py    augment(question, passages): the user turn the model sees; augment_item for prompts
    inference.py which retrieval generate, serve and eval use: --docs, --no-docs, the run's rag.docs
    arguments.py those flags (argparse only)
"""
