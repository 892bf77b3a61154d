"""Postgres + pgvector storage: the only state Carrier has.

One module per data area (`turns`, `runners`, `memories`, `agents`, ...), combined into
`Store` in `store`. Names are imported from the module that defines them: this package
imports none, so the migrate function, which needs only `migrate`, does not import
every area (a Lambda function's cold start pays for each module it imports).
"""
