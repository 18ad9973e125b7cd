"""Tornado request handlers: parse and validate input, call a service, render.

No business rules live here. Each module exposes ``ROUTES``; the application
(``wxbackend.app``) collects them.
"""
