"""WeChat integration: callback protocol, async API client, token manager, sandbox.

Everything that speaks WeChat's protocols lives in this package; services call
it through small interfaces (``oa_client(ctx).send_custom_text(...)``).
"""
