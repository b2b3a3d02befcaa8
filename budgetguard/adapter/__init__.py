"""The LangChain side of a guard: the callback handler and what places it.

``handler`` (the handler LangChain holds, with a sync and an async twin),
``compat`` (telling LangChain's async dispatch from its sync one), ``composite``
(one handler fanning events out to several), ``enforce`` (the ``enforce()``
context), ``models`` (placing a handler on a chat model), ``modes`` (wrapped
and pipe behaviour of ``BudgetGuard`` as a Runnable) and ``logs``. Nothing is
imported here, so ``tracking`` can use ``composite`` without loading the engine.
"""
