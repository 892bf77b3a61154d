"""The turn, step by step: ingest → decide → act → evaluate → embed.

Each step takes ids and a `Runtime`, persists its result before returning,
and can run in a process of its own. `run_turn` (in `run`) chains them in-process.

Each step is imported from its own module (`from carrier_core.turn.decide import
decide`): this package imports none of them, so a Lambda function that runs one step
does not import the others (its cold start pays for every module it imports).
"""
