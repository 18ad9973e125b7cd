"""Domain services: the platform's rules, one module per capability.

Services are plain async functions ``op(ctx, actor, ...)``. They check the
actor's scope, apply the change with a conditional write, write the audit
entry and raise :class:`wxbackend.errors.DomainError` subclasses with a code
when a rule says no. They never import handlers.
"""
