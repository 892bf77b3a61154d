"""Postgres + pgvector storage: the only state Carrier has.

One module per data area (`turns`, `runners`, `memories`, `agents`, ...), combined into
`Store` in `store`. Names are imported from the module that defines them: this package
imports none, so the migrate function, which needs only `migrate`, does not import
every area (a Lambda function's cold start pays for each module it imports).

The rows an area returns are `NamedTuple`s: immutable records like frozen dataclasses, but
defined in a tenth of the time (Python 3.12 compiles six methods for each frozen
dataclass, ~0.55 ms; every function imports about 25 of these). What a caller builds and
passes in (`Search`, `StepUsage`) stays a dataclass.
"""
