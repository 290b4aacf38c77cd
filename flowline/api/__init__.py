"""The JSON API: one blueprint per resource (workflows, nodes, runs, files), their request schemas and HTTP
helpers, the one error shape, authentication, CORS, the Prefer header, each route's declared answers and the
OpenAPI document built from them, and the gunicorn worker that answers what gunicorn's own parser refuses.
app.create_app registers it all."""
