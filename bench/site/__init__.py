"""The one Django site that serves servicewire and every Django peer under gunicorn."""
