"""qgate's one internal queue-service API: every protocol translates into this."""
