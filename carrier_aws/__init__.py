"""AWS glue for the Lambda functions: settings and secrets, room runners, pushes, webhooks.

Kept apart from `carrier_core`, which never imports an AWS SDK, and shipped
with it in the layer. `carrier_aws.local` (moto emulation) is never shipped.
"""
