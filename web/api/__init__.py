"""The REST API under /restapi/json/v1 (Password Manager Pro compatible) and its OpenAPI
document. One module per API resource, each ending in its ROUTES list."""
