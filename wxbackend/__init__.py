"""Backend of a city-wide party-building platform on WeChat.

The package holds the settings, the application factory, domain services
(`wxbackend.services`), the WeChat integration (`wxbackend.wechat`) and the
command line (`python -m wxbackend`). HTTP handlers live in the top-level
`handlers` package and MongoDB collections in `models`.
"""

__version__ = "0.1.0"
