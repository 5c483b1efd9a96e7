"""The ASGI application: routes, authentication, client secrets and limits shared by every transport."""
