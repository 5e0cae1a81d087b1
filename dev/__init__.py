"""Developer tooling: the local Redis and PostgreSQL, `make run` and `make test`.

Not part of the server. Nothing here imports the apps or Django: manage.py, Celery,
gunicorn and pytest run as child processes, after the services they need are up.
"""
