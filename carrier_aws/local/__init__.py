"""The serverless bundle on one machine: AWS emulated in-process by moto (never shipped).

`template.py` reads `template.yaml`; `emulator.py` starts moto with the template's queues
and state machine and routes Lambda invokes and SQS event sources to the handlers in
`functions/`; `cli.py` adds `carrier dev`, which serves the HTTP API over all of it.
"""
