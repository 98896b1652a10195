"""The JSON API (``/api/v1/``): token authentication, real HTTP status codes, RFC 9457 problem details, and
an OpenAPI 3 schema generated from the code (drf-spectacular). The XQueue endpoints (``grading.api``) keep
their envelope; both call the same functions of ``grading``, so every state change still goes through the
lifecycle."""
