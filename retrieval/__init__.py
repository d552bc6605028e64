"""The knowledge-base library: loaders, splitter, embedder, lexical index, Milvus store, retriever."""
